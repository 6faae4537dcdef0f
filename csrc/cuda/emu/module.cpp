// The Python module memops._cuda_emu: loading it registers torch.ops.memops_cuda_emu.<op> (the CUDA
// launchers and kernels of csrc/cuda/ run by the emulator on CPU tensors, with csrc/ops.cpp's
// schemas and csrc/autograd.cpp's autograd); configure() picks the schedule and the worker count.
#include <torch/extension.h>

#include "emu.h"
#include "runtime.h"

namespace memops {
namespace cuda {
// The `extern __shared__` array of common.cuh's dynamic_shared(): per OS thread, the most an H100
// block may opt in to, plus the canary that catches writes past a launch's size.
alignas(16) thread_local unsigned char memops_dynamic_shared[emu::kSharedPerBlockOptin + 4096];
unsigned char* dynamic_shared_here() { return memops_dynamic_shared; }
}  // namespace cuda
}  // namespace memops

void register_selftest(pybind11::module& m);  // selftest.cpp

namespace {
const bool installed = (emu::dynamic_shared_base = &memops::cuda::dynamic_shared_here, true);

emu::Schedule schedule_of(const std::string& name) {
  if (name == "round_robin") return emu::Schedule::RoundRobin;
  if (name == "lowest_first") return emu::Schedule::LowestFirst;
  if (name == "highest_first") return emu::Schedule::HighestFirst;
  if (name == "random") return emu::Schedule::Random;
  throw std::invalid_argument("memops._cuda_emu: unknown schedule '" + name +
                              "' (round_robin, lowest_first, highest_first, random)");
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "memops' CUDA kernels run by a CPU emulator (torch.ops.memops_cuda_emu): a test backend";
  m.attr("schedules") = std::vector<std::string>{"round_robin", "lowest_first", "highest_first", "random"};
  m.def(
      "configure",
      [](const std::string& schedule, uint64_t seed, int workers) {
        emu::configure(schedule_of(schedule), seed, workers);
      },
      "The order in which a block's runnable threads run (round_robin, lowest_first, highest_first, random with "
      "`seed`) and the number of OS threads that run blocks.",
      pybind11::arg("schedule") = "round_robin", pybind11::arg("seed") = 0, pybind11::arg("workers") = 1);
  m.def("stats", [] {
    const emu::Stats s = emu::stats();
    return pybind11::dict(pybind11::arg("launches") = s.launches, pybind11::arg("blocks") = s.blocks,
                          pybind11::arg("switches") = s.switches);
  });
  register_selftest(m);
  (void)installed;
}
