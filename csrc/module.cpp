// The Python module memops._C: importing it loads the op library (the TORCH_LIBRARY blocks in the
// other sources run at load) and tells what this build is.
#include <torch/extension.h>

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
}
