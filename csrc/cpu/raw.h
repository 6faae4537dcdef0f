// Raw-pointer entry points of the CPU kernels that ntm_sequence's CPU loop calls step after step. They
// are the kernels themselves (each op's tensor function checks, allocates and calls its raw one), so
// the loop runs the same code as the ops, without the dispatcher, the checks and the allocations.
//
// Arrays are contiguous in the op's layout, except the weights (B, H, N) of read and write and their
// gradients: batch row b starts at b * w_stride (w_stride = H * N when contiguous), so that the read
// and the write heads can be views of one (B, R + Hw, N) array.
#pragma once

#include <cstdint>

namespace memops {
namespace cpu {
namespace raw {

template <typename scalar_t>
void ntm_address(const scalar_t* memory, const scalar_t* keys, const scalar_t* beta, const scalar_t* gate,
                 const scalar_t* kernel, const scalar_t* gamma, const scalar_t* prev, int64_t B, int64_t H,
                 int64_t N, int64_t W, int64_t S, scalar_t eps, scalar_t* out);

// Gradients of ntm_address's inputs, in their shapes.
template <typename scalar_t>
struct NtmAddressGrads {
  scalar_t *memory, *keys, *beta, *gate, *kernel, *gamma, *prev;
};

template <typename scalar_t>
void ntm_address_backward(const scalar_t* grad, const scalar_t* memory, const scalar_t* keys, const scalar_t* beta,
                          const scalar_t* gate, const scalar_t* kernel, const scalar_t* gamma,
                          const scalar_t* prev, const scalar_t* out, int64_t B, int64_t H, int64_t N, int64_t W,
                          int64_t S, scalar_t eps, NtmAddressGrads<scalar_t> grads);

template <typename scalar_t>
void read(const scalar_t* memory, const scalar_t* weights, int64_t w_stride, int64_t B, int64_t H, int64_t N,
          int64_t W, scalar_t* out);

template <typename scalar_t>
void read_backward(const scalar_t* grad, const scalar_t* memory, const scalar_t* weights, int64_t w_stride,
                   int64_t B, int64_t H, int64_t N, int64_t W, scalar_t* grad_memory, scalar_t* grad_weights);

// erase == nullptr: no erase (e = 1); then grad_erase is not written.
template <typename scalar_t>
void write(const scalar_t* memory, const scalar_t* weights, int64_t w_stride, const scalar_t* erase,
           const scalar_t* add, int64_t B, int64_t H, int64_t N, int64_t W, scalar_t* out);

template <typename scalar_t>
void write_backward(const scalar_t* grad, const scalar_t* memory, const scalar_t* weights, int64_t w_stride,
                    const scalar_t* erase, const scalar_t* add, int64_t B, int64_t H, int64_t N, int64_t W,
                    scalar_t* grad_memory, scalar_t* grad_weights, scalar_t* grad_erase, scalar_t* grad_add);

}  // namespace raw
}  // namespace cpu
}  // namespace memops
