// The memory gradient of content addressing, shared by content_address and ntm_address: the second
// phase of their backward. Phase one runs over (b, h) rows and leaves, per row, sim and dsim
// (d loss / d sim) of every slot and the key's clamped norm; this phase runs over (b, i) slots so
// that each memory row's gradient (a sum over heads) is written by one task, with no atomics.
#pragma once

#include "../math/addressing.h"
#include "common.h"

namespace memops {
namespace cpu {

template <typename scalar_t>
void content_memory_grad(const scalar_t* mem, const scalar_t* keys, const scalar_t* key_norm,
                         const scalar_t* sim, const scalar_t* dsim, int64_t B, int64_t H, int64_t N,
                         int64_t W, bool cosine, scalar_t eps, scalar_t* grad_mem) {
  at::parallel_for(0, B * N, grain(H * W), [&](int64_t begin, int64_t end) {
    for (int64_t slot = begin; slot < end; ++slot) {
      const int64_t b = slot / N, i = slot % N;
      math::memory_grad_slot<scalar_t, scalar_t>(
          mem + slot * W, keys + b * H * W, H, W, cosine, eps, key_norm + b * H,
          sim + b * H * N + i, dsim + b * H * N + i, N, grad_mem + slot * W);
    }
  });
}

}  // namespace cpu
}  // namespace memops
