// The emulator's host-side controls (emu.cpp): the schedule, the worker count, counters.
#pragma once

#include <cstdint>

namespace emu {

// The order in which a block's runnable threads run, each until its next switch point.
enum class Schedule { RoundRobin, LowestFirst, HighestFirst, Random };

// Schedule, seed of Random (with the block index: the same order whatever the worker count), and
// the number of OS threads that run blocks (the caller's included).
void configure(Schedule schedule, uint64_t seed, int workers);

struct Stats {
  uint64_t launches, blocks, switches;
};
Stats stats();

}  // namespace emu
