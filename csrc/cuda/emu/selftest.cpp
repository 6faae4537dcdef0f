// Small kernels that test the emulator itself (tests/ops/test_cuda_emu.py): shuffle semantics, and
// the faults it must report (divergent barrier, exit before a barrier, partial-warp shuffle, shared
// memory overrun) or expose (a race that only some schedules show).
#include <torch/extension.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "emu.h"

namespace {

// (the kernels' `extern __shared__` array is common.cuh's; these take the same buffer directly)
float* dynamic_floats() { return reinterpret_cast<float*>(emu::dynamic_shared_base()); }

__global__ void shuffles(float* out, int width) {
  const int t = threadIdx.x;
  const float v = float(t);
  out[4 * t + 0] = __shfl_xor_sync(0xffffffffu, v, 3, width);
  out[4 * t + 1] = __shfl_down_sync(0xffffffffu, v, 5, width);
  out[4 * t + 2] = __shfl_up_sync(0xffffffffu, v, 5, width);
  out[4 * t + 3] = __shfl_sync(0xffffffffu, v, t * 7 + 1, width);
}

__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void exit_before_barrier(float* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void partial_warp_shuffle(float* out) {
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, float(threadIdx.x), 1);
}

__global__ void smem_overrun(float* out) {
  dynamic_floats()[threadIdx.x] = out[0];  // 64 threads, 32 floats of room
}

// Each thread publishes its index, then (no barrier!) reads its neighbour's: a race. (Dynamic shared
// memory, NaN until written: a static __shared__ array keeps the previous block's values.)
__global__ void race(float* out) {
  float* s = dynamic_floats();
  s[threadIdx.x] = float(threadIdx.x);
  __syncwarp();  // a switch point that orders nothing across warps
  out[threadIdx.x] = s[(threadIdx.x + 32) % 64];
}

// Lane 0 writes, then the warp shuffles, then every lane reads lane 0's value. The shuffle is a
// switch point, so under every schedule the write runs first and the outputs agree; but on a GPU a
// shuffle orders no memory: a race only the ThreadSanitizer build (tools/emu_tsan.py) reports.
__global__ void race_hidden_by_shuffle(float* out) {
  float* s = dynamic_floats();
  if (threadIdx.x % 32 == 0) s[threadIdx.x] = 1.0f;
  const float v = __shfl_sync(0xffffffffu, 1.0f, 0);
  out[threadIdx.x] = s[threadIdx.x / 32 * 32] + v;
}

// The same exchange ordered by __syncwarp within each warp, then by __syncthreads across warps; two
// blocks (the second reuses the first's shared memory on one worker): no race.
__global__ void ordered(float* out) {
  float* s = dynamic_floats();
  if (threadIdx.x % 32 == 0) s[threadIdx.x] = 1.0f;
  __syncwarp();
  float v = s[threadIdx.x / 32 * 32];
  __syncthreads();
  v += s[(threadIdx.x / 32 * 32 + 32) % blockDim.x];
  __syncthreads();
  s[threadIdx.x] = v;  // rewritten after every thread has read it
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// Dynamic shared memory that no thread wrote reads as NaN.
__global__ void unwritten_shared(float* out) {
  out[threadIdx.x] = dynamic_floats()[threadIdx.x];
}

std::vector<float> run(const std::string& name, int threads, int width) {
  std::vector<float> out(4 * 64, 0.0f);
  float* p = out.data();
  if (name == "shuffles") emu::launch(shuffles, dim3(1), dim3(threads), 0, p, width);
  else if (name == "divergent_barrier") emu::launch(divergent_barrier, dim3(1), dim3(threads), 0, p);
  else if (name == "exit_before_barrier") emu::launch(exit_before_barrier, dim3(1), dim3(threads), 0, p);
  else if (name == "partial_warp_shuffle") emu::launch(partial_warp_shuffle, dim3(1), dim3(threads), 0, p);
  else if (name == "smem_overrun") emu::launch(smem_overrun, dim3(1), dim3(threads), 32 * sizeof(float), p);
  else if (name == "race") emu::launch(race, dim3(1), dim3(threads), 64 * sizeof(float), p);
  else if (name == "race_hidden_by_shuffle")
    emu::launch(race_hidden_by_shuffle, dim3(1), dim3(threads), 64 * sizeof(float), p);
  else if (name == "ordered") emu::launch(ordered, dim3(2), dim3(threads), 64 * sizeof(float), p);
  else if (name == "unwritten_shared") emu::launch(unwritten_shared, dim3(1), dim3(threads), 64 * sizeof(float), p);
  else throw std::invalid_argument("unknown self-test " + name);
  out.resize(4 * threads);
  return out;
}

}  // namespace

void register_selftest(pybind11::module& m) {
  m.def("selftest", &run, "Run the emulator self-test kernel `name` on one block of `threads` threads.",
        pybind11::arg("name"), pybind11::arg("threads"), pybind11::arg("width") = 32);
}
