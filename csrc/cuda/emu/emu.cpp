// The emulator's runtime (see emu.h): fibers, the per-block scheduler, barriers, warp exchanges,
// the worker pool, and the checks that turn a GPU hang or race into an error with file:line.
#include "emu.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include "runtime.h"

// The ThreadSanitizer build (tools/emu_tsan.py; g++ -fsanitize=thread defines __SANITIZE_THREAD__):
// every emulated thread is a TSan fiber, the emulator's own bookkeeping is ignored, and the ordering
// CUDA guarantees is announced as release/acquire: __syncthreads and a full-warp __syncwarp (per
// barrier generation, two alternating sync objects: a thread cannot reach generation k + 2 before
// every thread has left k), and the host's writes before a launch / its reads after one. A shuffle
// orders nothing (as on a GPU): a race it hides from every schedule is still reported.
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
namespace emu {
namespace tsan {
inline void* create_fiber() { return __tsan_create_fiber(0); }
inline void destroy_fiber(void* f) { __tsan_destroy_fiber(f); }
inline void* current_fiber() { return __tsan_get_current_fiber(); }
inline void switch_to(void* f) { __tsan_switch_to_fiber(f, __tsan_switch_to_fiber_no_sync); }
inline void release(void* a) { __tsan_release(a); }
inline void acquire(void* a) { __tsan_acquire(a); }
inline void ignore_begin() { __tsan_ignore_thread_begin(); }
inline void ignore_end() { __tsan_ignore_thread_end(); }
}  // namespace tsan
}  // namespace emu
#else
namespace emu {
namespace tsan {
inline void* create_fiber() { return nullptr; }
inline void destroy_fiber(void*) {}
inline void* current_fiber() { return nullptr; }
inline void switch_to(void*) {}
inline void release(void*) {}
inline void acquire(void*) {}
inline void ignore_begin() {}
inline void ignore_end() {}
}  // namespace tsan
}  // namespace emu
#endif

namespace emu {

thread_local ThreadState* current = nullptr;
unsigned char* (*dynamic_shared_base)() = nullptr;

namespace {

// ---- configuration (set from Python: memops._cuda_emu.configure) -------------------------------
std::atomic<int> g_schedule{static_cast<int>(Schedule::RoundRobin)};
std::atomic<uint64_t> g_seed{0};
std::atomic<int> g_workers{1};
std::atomic<uint64_t> g_launches{0}, g_blocks{0}, g_switches{0};

std::mutex g_attr_mutex;
std::unordered_map<const void*, int> g_max_dynamic;  // cudaFuncSetAttribute opt-ins

constexpr size_t kStackBytes = 256 * 1024;  // per fiber, plus a guard page below
constexpr size_t kCanary = 256;             // bytes after the dynamic shared memory that must stay 0xff

// ---- context switch --------------------------------------------------------------------------
// x86-64: a minimal switch (callee-saved registers, MXCSR and the x87 control word) instead of
// swapcontext, whose signal-mask system call would dominate the run time. Elsewhere: ucontext.
#if defined(__x86_64__)
extern "C" void memops_emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl memops_emu_switch
.type memops_emu_switch,@function
memops_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size memops_emu_switch,.-memops_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");
struct Context {
  void* sp = nullptr;
};
#else
struct Context {
  ucontext_t uc;
};
#endif

enum class Wait { None, Bar, Warp, Exited };

struct Fiber {
  ThreadState state;
  Context ctx;
  char* stack = nullptr;  // top of the usable stack
  Wait wait = Wait::None;
  const char* file = "";  // where it waits
  int line = 0;
  unsigned mask = 0;  // warp op: the lanes it waits for
  int warp_kind = 0;  // 0 __syncwarp, 1 + Shfl: a shuffle
  int width = 32, arg = 0;
  uint64_t bits = 0;  // shuffle: the value it gives, then the value it gets
  uint64_t generation = 0;  // the barrier / warp-sync generation it waits at (TSan's sync object)
  void* tsan = nullptr;     // its TSan fiber (TSan build)
  bool ignoring = false;    // TSan ignores its accesses: it is inside the emulator, not the kernel

  void ignore() {
    tsan::ignore_begin();
    ignoring = true;
  }
  void unignore() {
    if (!ignoring) return;
    ignoring = false;
    tsan::ignore_end();
  }
};

struct Worker;
thread_local Worker* t_worker = nullptr;

// Everything one OS thread needs to run blocks: its fibers (stacks kept between blocks).
struct Worker {
  std::vector<Fiber> fibers;
  std::vector<int> ready;  // runnable fibers, ordered by the schedule
  std::vector<uint32_t> arrived, exited;  // per warp: lanes waiting at a warp op, lanes that exited
  std::vector<uint64_t> warp_generation;  // per warp: __syncwarp releases so far
  uint64_t bar_generation = 0;            // __syncthreads releases so far
  // TSan's sync objects (only their addresses matter): barrier and warp-sync generations (even, odd),
  // the host before the block's threads start, the threads' ends before the host goes on.
  char bar_sync[2], warp_sync[32][2], block_start, block_end;
  void* tsan_sched = nullptr;  // the TSan fiber of the scheduler (the OS thread's own)
  Context sched;
  const std::function<void()>* body = nullptr;
  int live = 0, nthreads = 0, running = -1;
  std::string error;
  std::mt19937_64 rng;
  Schedule schedule = Schedule::RoundRobin;
  size_t rr_head = 0;

  ~Worker() {
    for (auto& f : fibers) {
      if (f.stack) munmap(f.stack - kStackBytes - page(), kStackBytes + page());
      if (f.tsan) tsan::destroy_fiber(f.tsan);
    }
  }
  static size_t page() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

  void ensure_fibers(int n) {
    while (static_cast<int>(fibers.size()) < n) {
      Fiber f;
      char* base = static_cast<char*>(
          mmap(nullptr, kStackBytes + page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
      if (base == MAP_FAILED) throw std::runtime_error("emu: cannot map a fiber stack");
      mprotect(base, page(), PROT_NONE);  // guard page: a stack overflow faults instead of corrupting
      f.stack = base + page() + kStackBytes;
      f.tsan = tsan::create_fiber();
      fibers.push_back(f);
    }
  }

  // ready: push / pop in the schedule's order.
  void push(int t) {
    ready.push_back(t);
    if (schedule == Schedule::LowestFirst) std::push_heap(ready.begin(), ready.end(), std::greater<int>());
    if (schedule == Schedule::HighestFirst) std::push_heap(ready.begin(), ready.end(), std::less<int>());
  }
  int pop() {
    int t;
    switch (schedule) {
      case Schedule::LowestFirst:
        std::pop_heap(ready.begin(), ready.end(), std::greater<int>());
        t = ready.back();
        ready.pop_back();
        return t;
      case Schedule::HighestFirst:
        std::pop_heap(ready.begin(), ready.end(), std::less<int>());
        t = ready.back();
        ready.pop_back();
        return t;
      case Schedule::Random: {
        const size_t k = rng() % ready.size();
        t = ready[k];
        ready[k] = ready.back();
        ready.pop_back();
        return t;
      }
      default:  // round-robin: first in, first out
        t = ready[rr_head++];
        if (rr_head == ready.size()) {
          ready.clear();
          rr_head = 0;
        }
        return t;
    }
  }
  bool empty() const { return rr_head >= ready.size(); }

  static void fiber_main();
  void start(int t);
  void resume(int t);
  void yield_to_scheduler();
  void run_block(uint3 block_idx, dim3 grid, dim3 block, size_t smem);
  [[noreturn]] void fail(const std::string& what);
  std::string where(int t) const;
};

std::string Worker::where(int t) const {
  const Fiber& f = fibers[t];
  std::ostringstream s;
  s << "thread " << t << " (warp " << t / 32 << ", lane " << t % 32 << ")";
  if (f.wait == Wait::Bar) s << " at __syncthreads (" << f.file << ":" << f.line << ")";
  if (f.wait == Wait::Warp)
    s << " at " << (f.warp_kind == 0 ? "__syncwarp" : "__shfl_*_sync") << " (" << f.file << ":" << f.line
      << ", mask 0x" << std::hex << f.mask << std::dec << ")";
  if (f.wait == Wait::Exited) s << " exited";
  return s.str();
}

void Worker::fiber_main() {
  Worker* w = t_worker;
  tsan::acquire(&w->block_start);
  w->fibers[w->running].unignore();  // (a reused fiber left its last block inside the emulator)
  (*w->body)();
  w->fibers[w->running].ignore();
  tsan::release(&w->block_end);
  w->fibers[w->running].wait = Wait::Exited;
  w->exited[w->running / 32] |= 1u << (w->running % 32);
  --w->live;
  w->fibers[w->running].unignore();  // (TSan: a fiber must not end inside an ignore)
  w->yield_to_scheduler();  // never resumed
  std::abort();
}

void Worker::start(int t) {
  Fiber& f = fibers[t];
#if defined(__x86_64__)
  // A frame that memops_emu_switch "returns" into fiber_main from: 6 registers, MXCSR/x87 CW, the
  // return address; the stack 16-byte aligned at fiber_main's entry (as after a call).
  uint64_t* sp = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(f.stack) & ~uintptr_t(15));
  *--sp = 0;                                             // fiber_main's (never used) return address
  *--sp = reinterpret_cast<uint64_t>(&Worker::fiber_main);
  for (int i = 0; i < 6; ++i) *--sp = 0;                 // rbp rbx r12-r15
  --sp;
  uint32_t mxcsr;
  uint16_t fcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  std::memcpy(reinterpret_cast<char*>(sp), &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &fcw, 2);
  f.ctx.sp = sp;
#else
  getcontext(&f.ctx.uc);
  f.ctx.uc.uc_stack.ss_sp = f.stack - kStackBytes;
  f.ctx.uc.uc_stack.ss_size = kStackBytes;
  f.ctx.uc.uc_link = nullptr;
  makecontext(&f.ctx.uc, &Worker::fiber_main, 0);
#endif
}

void Worker::resume(int t) {
  running = t;
  current = &fibers[t].state;
  fibers[t].wait = Wait::None;
  g_switches.fetch_add(1, std::memory_order_relaxed);
  tsan::switch_to(fibers[t].tsan);  // (immediately before the switch: what follows is the fiber's)
#if defined(__x86_64__)
  memops_emu_switch(&sched.sp, fibers[t].ctx.sp);
#else
  swapcontext(&sched.uc, &fibers[t].ctx.uc);
#endif
  current = nullptr;
}

void Worker::yield_to_scheduler() {
  Fiber& f = fibers[running];
  tsan::switch_to(tsan_sched);
#if defined(__x86_64__)
  memops_emu_switch(&f.ctx.sp, sched.sp);
#else
  swapcontext(&f.ctx.uc, &sched.uc);
#endif
  current = &f.state;  // resumed
}

// An error found inside a fiber: recorded, and the fiber parks for good (the scheduler throws).
void Worker::fail(const std::string& what) {
  if (error.empty()) error = what;
  fibers[running].wait = Wait::Exited;  // never resumed: the block is abandoned
  fibers[running].unignore();
  yield_to_scheduler();
  std::abort();
}

void Worker::run_block(uint3 block_idx, dim3 grid, dim3 block, size_t smem) {
  nthreads = static_cast<int>(block.x * block.y * block.z);
  ensure_fibers(nthreads);
  if (smem + kCanary > 0 && dynamic_shared_base) std::memset(dynamic_shared_base(), 0xff, smem + kCanary);
  ready.clear();
  rr_head = 0;
  arrived.assign((nthreads + 31) / 32, 0u);
  exited.assign((nthreads + 31) / 32, 0u);
  warp_generation.assign((nthreads + 31) / 32, 0u);
  rng.seed(g_seed.load() * 0x9E3779B97F4A7C15ull ^
           ((uint64_t(block_idx.z) * grid.y + block_idx.y) * grid.x + block_idx.x));
  for (int t = 0; t < nthreads; ++t) {
    Fiber& f = fibers[t];
    f.state.thread_idx = uint3{unsigned(t % block.x), unsigned(t / block.x % block.y), unsigned(t / (block.x * block.y))};
    f.state.block_idx = block_idx;
    f.state.block_dim = block;
    f.state.grid_dim = grid;
    f.wait = Wait::None;
    start(t);
    push(t);
  }
  live = nthreads;
  tsan::release(&block_start);
  for (;;) {
    while (!empty()) {
      resume(pop());
      if (!error.empty()) throw std::runtime_error(error);
    }
    if (live == 0) break;
    // Nothing runnable: a block barrier that every thread reached, or a deadlock.
    int at_bar = -1, other = -1, exited = -1;
    for (int t = 0; t < nthreads; ++t) {
      const Wait w = fibers[t].wait;
      if (w == Wait::Bar) {
        if (at_bar < 0) at_bar = t;
        else if (fibers[t].line != fibers[at_bar].line || std::strcmp(fibers[t].file, fibers[at_bar].file) != 0)
          throw std::runtime_error("emu: threads of a block wait at different barriers: " + where(at_bar) +
                                   ", " + where(t));
      } else if (w == Wait::Exited) {
        if (exited < 0) exited = t;
      } else if (other < 0) {
        other = t;
      }
    }
    if (other >= 0)
      throw std::runtime_error("emu: deadlock: " + where(other) + " waits for lanes that never arrive" +
                               (at_bar >= 0 ? " (" + where(at_bar) + ")" : std::string()) +
                               (exited >= 0 ? " (" + where(exited) + ")" : std::string()));
    if (exited >= 0)
      throw std::runtime_error("emu: deadlock: " + where(exited) + " while " + where(at_bar) +
                               ": __syncthreads must be reached by every thread of the block");
    ++bar_generation;
    for (int t = 0; t < nthreads; ++t) push(t);  // release the barrier
  }
  tsan::acquire(&block_end);
  if (smem + kCanary > 0 && dynamic_shared_base) {
    const unsigned char* p = dynamic_shared_base() + smem;
    for (size_t i = 0; i < kCanary; ++i)
      if (p[i] != 0xff) {
        std::ostringstream s;
        s << "emu: a thread wrote past the " << smem << " bytes of dynamic shared memory (byte " << smem + i << ")";
        throw std::runtime_error(s.str());
      }
  }
}

// ---- the worker pool ---------------------------------------------------------------------------
struct Job {
  const std::function<void()>* body;
  dim3 grid, block;
  size_t smem;
  uint64_t blocks;
  std::atomic<uint64_t> next{0};
  std::mutex mutex;
  std::string error;
};

void work(Job& job) {
  tsan::ignore_begin();  // the scheduler's bookkeeping; only the kernels' accesses are checked
  thread_local Worker worker;
  t_worker = &worker;
  worker.tsan_sched = tsan::current_fiber();
  worker.body = job.body;
  worker.schedule = static_cast<Schedule>(g_schedule.load());
  for (;;) {
    const uint64_t b = job.next.fetch_add(1);
    if (b >= job.blocks) break;
    const uint3 idx{unsigned(b % job.grid.x), unsigned(b / job.grid.x % job.grid.y),
                    unsigned(b / (uint64_t(job.grid.x) * job.grid.y))};
    try {
      worker.error.clear();
      worker.run_block(idx, job.grid, job.block, job.smem);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(job.mutex);
      if (job.error.empty()) {
        std::ostringstream s;
        s << e.what() << " [block (" << idx.x << ", " << idx.y << ", " << idx.z << ") of a grid of (" << job.grid.x
          << ", " << job.grid.y << ", " << job.grid.z << ") blocks of " << job.block.x << " threads]";
        job.error = s.str();
      }
      job.next.store(job.blocks);  // stop the others
      break;
    }
    g_blocks.fetch_add(1, std::memory_order_relaxed);
  }
  tsan::ignore_end();
}

}  // namespace

void set_max_dynamic_shared(const void* kernel, int bytes) {
  std::lock_guard<std::mutex> lock(g_attr_mutex);
  g_max_dynamic[kernel] = bytes;
}

void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  std::ostringstream bad;
  if (threads == 0 || threads > 1024 || block.z > 64) bad << "block of " << threads << " threads";
  else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) bad << "empty or too large grid";
  else if (smem > size_t(kSharedPerBlockOptin)) bad << smem << " bytes of dynamic shared memory (most: " << kSharedPerBlockOptin << ")";
  else if (smem > size_t(kSharedPerBlock)) {
    std::lock_guard<std::mutex> lock(g_attr_mutex);
    auto it = g_max_dynamic.find(kernel);
    if (it == g_max_dynamic.end() || size_t(it->second) < smem)
      bad << smem << " bytes of dynamic shared memory without cudaFuncSetAttribute(MaxDynamicSharedMemorySize)";
  }
  if (!bad.str().empty()) throw std::runtime_error("emu: invalid launch: " + bad.str());
  g_launches.fetch_add(1, std::memory_order_relaxed);
  Job job;
  job.body = &body;
  job.grid = grid;
  job.block = block;
  job.smem = smem;
  job.blocks = uint64_t(grid.x) * grid.y * grid.z;
  const int helpers = static_cast<int>(std::min<uint64_t>(std::max(g_workers.load(), 1), job.blocks)) - 1;
  std::vector<std::thread> threads_;
  for (int i = 0; i < helpers; ++i) threads_.emplace_back([&job] { work(job); });
  work(job);
  for (auto& t : threads_) t.join();
  if (!job.error.empty()) throw std::runtime_error(job.error);
}

// ---- switch points ---------------------------------------------------------------------------
void syncthreads(const char* file, int line) {
  Worker& w = *t_worker;
  Fiber& f = w.fibers[w.running];
  f.ignore();
  f.wait = Wait::Bar;
  f.file = file;
  f.line = line;
  f.generation = w.bar_generation;
  tsan::release(&w.bar_sync[f.generation & 1]);
  w.yield_to_scheduler();
  tsan::acquire(&w.bar_sync[f.generation & 1]);
  f.unignore();
}

namespace {

// A warp op of the running thread: wait until every lane of `mask` is at the same op, then (the last
// to arrive) release them all, computing each shuffle's result. O(1) per arrival, O(32) per release.
void warp_op(Worker& w, int kind, unsigned mask, int arg, int width, const char* file, int line) {
  const int t = w.running, lane = t % 32, base = t - lane, warp = t / 32;
  const int lanes = std::min(32, w.nthreads - base);  // lanes that exist in this warp
  const char* name = kind == 0 ? "__syncwarp" : "__shfl_*_sync";
  auto fail = [&](auto&&... what) {
    std::ostringstream s;
    s << "emu: " << name << " (" << file << ":" << line << ", mask 0x" << std::hex << mask << std::dec << "): ";
    (s << ... << what);
    w.fail(s.str());
  };
  if (!(mask >> lane & 1u)) fail("called by lane ", lane, ", outside its mask");
  if (lanes < 32 && (mask >> lanes) != 0)
    fail("with mask 0xffffffff in a partial warp of ", lanes, " lanes (block of ", w.nthreads, " threads)");
  if (kind != 0 && (width < 1 || width > 32 || (width & (width - 1)) != 0))
    fail("shuffle width ", width, " is not a power of two up to 32");
  if (w.exited[warp] & mask) fail("deadlock: a lane of the mask has exited (exited lanes 0x", std::hex, w.exited[warp], ")");
  Fiber& f = w.fibers[t];
  f.generation = w.warp_generation[warp];
  if (kind == 0) tsan::release(&w.warp_sync[warp][f.generation & 1]);
  f.wait = Wait::Warp;
  f.warp_kind = kind;
  f.mask = mask;
  f.arg = arg;
  f.width = width;
  f.file = file;
  f.line = line;
  w.arrived[warp] |= 1u << lane;
  if ((w.arrived[warp] & mask) == mask) {
    for (int l = 0; l < lanes; ++l) {
      if (!(mask >> l & 1u)) continue;
      const Fiber& o = w.fibers[base + l];
      if (o.warp_kind != kind || o.mask != mask || o.line != line || (o.file != file && std::strcmp(o.file, file) != 0) || (kind != 0 && o.width != width))
        fail("lanes of a warp at different warp ops: ", w.where(t), " (width ", width, "), ", w.where(base + l),
             " (width ", o.width, ")");
    }
    if (kind != 0) {
      uint64_t got[32];
      for (int l = 0; l < lanes; ++l) {
        if (!(mask >> l & 1u)) continue;
        const Fiber& o = w.fibers[base + l];
        const int W = o.width, seg = l & ~(W - 1), last = seg + W - 1;
        int src = l;
        switch (static_cast<Shfl>(kind - 1)) {
          case Shfl::Idx: src = seg + (o.arg & (W - 1)); break;
          case Shfl::Up: src = l - o.arg < seg ? l : l - o.arg; break;
          case Shfl::Down: src = l + o.arg > last ? l : l + o.arg; break;
          case Shfl::Xor: src = (l ^ o.arg) > last || (l ^ o.arg) < seg ? l : (l ^ o.arg); break;
        }
        if (src >= lanes || !(mask >> src & 1u)) fail(w.where(base + l), " reads lane ", src, ", which is not in the mask");
        got[l] = w.fibers[base + src].bits;
      }
      for (int l = 0; l < lanes; ++l)
        if (mask >> l & 1u) w.fibers[base + l].bits = got[l];
    }
    w.arrived[warp] &= ~mask;
    if (kind == 0) ++w.warp_generation[warp];
    for (int l = 0; l < lanes; ++l)
      if (mask >> l & 1u) {
        w.fibers[base + l].wait = Wait::None;
        w.push(base + l);
      }
  }
  w.yield_to_scheduler();
  if (kind == 0) tsan::acquire(&w.warp_sync[warp][f.generation & 1]);
}

}  // namespace

void syncwarp(unsigned mask, const char* file, int line) {
  Worker& w = *t_worker;
  Fiber& f = w.fibers[w.running];
  f.ignore();
  warp_op(w, 0, mask, 0, 32, file, line);
  f.unignore();
}

uint64_t shuffle(unsigned mask, uint64_t bits, Shfl kind, int arg, int width, const char* file, int line) {
  Worker& w = *t_worker;
  Fiber& f = w.fibers[w.running];
  f.ignore();
  f.bits = bits;
  warp_op(w, 1 + static_cast<int>(kind), mask, arg, width, file, line);
  bits = f.bits;
  f.unignore();
  return bits;
}

void configure(Schedule schedule, uint64_t seed, int workers) {
  g_schedule.store(static_cast<int>(schedule));
  g_seed.store(seed);
  g_workers.store(std::max(1, workers));
}

Stats stats() { return Stats{g_launches.load(), g_blocks.load(), g_switches.load()}; }

}  // namespace emu
