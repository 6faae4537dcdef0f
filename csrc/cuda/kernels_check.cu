// Compile-only check of every CUDA kernel, with no ATen: instantiates each kernel of the
// csrc/cuda/<op>_kernels.cuh files for the four storage types, so that `nvcc -Xptxas -v` compiles
// them all and reports their registers and spills (tools/nvcc_check.sh; CI runs it without a GPU).
// Not part of the extension. Keep it listing every <op>_kernels.cuh (similarity_kernels.cuh, shared
// by content_address and ntm_address, comes with them: their lists include its kernels).
#include "common.cuh"
// (one include per op family, added with its kernels)
#include "attention_gru_kernels.cuh"
#include "content_address_kernels.cuh"
#include "content_scores_kernels.cuh"
#include "ntm_address_kernels.cuh"
#include "read_kernels.cuh"
#include "sharpen_kernels.cuh"
#include "shift_kernels.cuh"
#include "write_kernels.cuh"

namespace memops {
namespace cuda {

template <typename T>
void list_every_kernel(KernelList& out) {
  (void)out;
  list_attention_gru_kernels<T>(out);
  list_content_address_kernels<T>(out);
  list_content_scores_kernels<T>(out);
  list_ntm_address_kernels<T>(out);
  list_read_kernels<T>(out);
  list_sharpen_kernels<T>(out);
  list_shift_kernels<T>(out);
  list_write_kernels<T>(out);
}

template void list_every_kernel<float>(KernelList&);
template void list_every_kernel<double>(KernelList&);
template void list_every_kernel<__half>(KernelList&);
template void list_every_kernel<__nv_bfloat16>(KernelList&);

}  // namespace cuda
}  // namespace memops
