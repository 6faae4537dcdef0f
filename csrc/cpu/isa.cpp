// Which instruction set the CPU kernels run (csrc/cpu/isa.h): detected once, lowered on request.
#include "isa.h"

#include <algorithm>
#include <atomic>

#include <c10/util/Exception.h>

namespace memops {
namespace cpu {
namespace {

Isa detect() {
#ifdef MEMOPS_ISA_CLONES
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    return Isa::kAvx2;
#endif
  return Isa::kDefault;
}

// AVX2 unless asked for more (as ATen's own default): the AVX-512 clones are built and tested, but
// measured on an AMD EPYC (Zen 4, one thread, the NTM paper size, fwd+bwd) they were slower than the
// AVX2 ones for content_address, ntm_address, read and write (W = 20 fills 16 lanes badly) and faster
// only for sharpen; benchmarks/results/ops.csv has the runs.
std::atomic<int>& current() {
  static std::atomic<int> isa{std::min(static_cast<int>(isa_supported()), static_cast<int>(Isa::kAvx2))};
  return isa;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "default";
  }
}

Isa isa_supported() {
  static const Isa best = detect();
  return best;
}

Isa isa_in_use() { return static_cast<Isa>(current().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  TORCH_CHECK(static_cast<int>(isa) <= static_cast<int>(isa_supported()), "memops: this CPU (or build) ",
              "runs the kernels with at most '", isa_name(isa_supported()), "', not '", isa_name(isa), "'");
  current().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace cpu
}  // namespace memops
