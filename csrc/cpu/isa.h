// The instruction set of the CPU kernels' loops, chosen at run time.
//
// The build's flags target baseline x86-64 (SSE2: 4 float lanes, no FMA), so that the library runs on
// any x86-64 CPU. The loops that do the work (the per-row math of csrc/math, called inside each
// kernel's at::parallel_for body) are compiled three times, for AVX-512, for AVX2 + FMA and for the
// baseline, and `vectorized(f)` runs the one for the capability in use: AVX2 where the CPU has it
// (AVX-512 on request: see isa.cpp), else the baseline; MEMOPS_CPU_CAPABILITY=default|avx2|avx512 or
// memops.set_cpu_capability() chooses another, never one the CPU lacks.
//
// How: `f` (a lambda taking the IsaConstant below) is called from a function template with GCC's
// target attribute and `flatten`, which inlines f and everything it calls (the math in csrc/math)
// into that function, so all of it is compiled for the target; what cannot be inlined (libm, ATen)
// is called as it is. The clones are separate template instances, so nothing compiled for AVX-512 is
// shared with baseline code. (GCC's target_clones would choose by itself, but does not inline callees
// into the clones, which then do not vectorise.) The clones follow the same formulas; FMA contraction
// and lane count change the rounding within the tolerance table, and each clone is deterministic
// across thread counts (its reductions run in fixed order per row).
#pragma once

#include <type_traits>

namespace memops {
namespace cpu {

enum class Isa : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);
Isa isa_supported();   // the best this CPU and this build have
Isa isa_in_use();      // what vectorized() runs: AVX2 (or less, as the CPU has) unless set
void set_isa(Isa isa);  // TORCH_CHECKs that the CPU has it

// The capability a clone is compiled for, as a type the body receives (a body can pick an algorithm
// by it: sharpen's power is a polynomial only where 8+ lanes with FMA beat libm's scalar powf).
template <Isa kIsa>
using IsaConstant = std::integral_constant<Isa, kIsa>;
template <typename IsaC>
constexpr bool kWideSimd = IsaC::value != Isa::kDefault;

#if defined(__x86_64__) && defined(__GNUC__)
#define MEMOPS_ISA_CLONES 1
template <typename F>
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi2"), flatten)) void run_avx512(
    const F& f) {
  f(IsaConstant<Isa::kAvx512>{});
}
template <typename F>
__attribute__((target("avx2,fma,bmi2"), flatten)) void run_avx2(const F& f) {
  f(IsaConstant<Isa::kAvx2>{});
}
#endif
template <typename F>
void run_default(const F& f) {
  f(IsaConstant<Isa::kDefault>{});
}

template <typename F>
void vectorized(const F& f) {
#ifdef MEMOPS_ISA_CLONES
  switch (isa_in_use()) {
    case Isa::kAvx512: return run_avx512(f);
    case Isa::kAvx2: return run_avx2(f);
    default: break;
  }
#endif
  run_default(f);
}

}  // namespace cpu
}  // namespace memops
