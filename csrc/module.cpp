// The Python module memops._C: importing it loads the op library (the TORCH_LIBRARY blocks in the
// other sources run at load) and tells what this build is.
#include <torch/extension.h>

#include "cpu/isa.h"

#ifndef MEMOPS_VERSION
#define MEMOPS_VERSION "unknown"
#endif
#ifndef MEMOPS_TORCH_VERSION
#define MEMOPS_TORCH_VERSION "unknown"
#endif
#ifndef MEMOPS_CUDA_ARCHS
#define MEMOPS_CUDA_ARCHS ""
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "memops compiled ops (registered under torch.ops.memops)";
  m.attr("__version__") = MEMOPS_VERSION;
#ifdef MEMOPS_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cuda_archs") = MEMOPS_CUDA_ARCHS;
  m.attr("torch_version") = MEMOPS_TORCH_VERSION;
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  // The instruction set of the CPU kernels (csrc/cpu/isa.h), by name: default, avx2, avx512.
  using memops::cpu::Isa;
  m.def("cpu_capability_supported", [] { return memops::cpu::isa_name(memops::cpu::isa_supported()); });
  m.def("cpu_capability", [] { return memops::cpu::isa_name(memops::cpu::isa_in_use()); });
  m.def("set_cpu_capability", [](const std::string& name) {
    for (Isa isa : {Isa::kDefault, Isa::kAvx2, Isa::kAvx512}) {
      if (name == memops::cpu::isa_name(isa)) return memops::cpu::set_isa(isa);
    }
    TORCH_CHECK_VALUE(false, "memops: unknown CPU capability '", name, "' (expected default, avx2 or avx512)");
  });
}
