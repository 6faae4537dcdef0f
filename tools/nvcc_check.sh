#!/usr/bin/env bash
# Compile-only checks of the CUDA code with nvcc: no GPU and no CUDA build of torch needed (CI runs it
# on a CPU machine). For every arch in $ARCHS (default "80 90"), warnings as errors:
# csrc/math/nvcc_check.cu (the shared math as device code) and csrc/cuda/kernels_check.cu (every
# kernel for float, double, half and bfloat16, with each kernel's registers and spills from
# tools/ptxas_report.py). For the last arch, the launchers csrc/cuda/<op>.cu against the installed
# torch's headers (tools/nvcc_stub stands in for the one header a CPU build of torch lacks). The flags
# are those of torch's CUDAExtension, so code that passes here builds there.
#
#   bash tools/nvcc_check.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHS=${ARCHS:-"80 90"}
OUT=build/nvcc_check
mkdir -p "$OUT"
if ! command -v nvcc >/dev/null; then
  echo "nvcc not found: CUDA compile checks skipped"
  exit 0
fi
nvcc --version | tail -1
TORCH_FLAGS=(-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
             -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr)
COMMON=(-std=c++20 -O3 "${TORCH_FLAGS[@]}" -Werror all-warnings -Xcompiler -Wall)

# One background job per arch (math, then kernels), reported in order once all are done.
check_arch() {
  local arch=$1
  nvcc "${COMMON[@]}" -arch=sm_$arch -c csrc/math/nvcc_check.cu -o "$OUT/math_sm$arch.o" &&
    nvcc "${COMMON[@]}" -arch=sm_$arch -Xptxas -v -c csrc/cuda/kernels_check.cu -o "$OUT/kernels_sm$arch.o"
}
arch_pids=()
for arch in $ARCHS; do
  check_arch "$arch" > "$OUT/ptxas_sm$arch.log" 2>&1 &
  arch_pids+=("$!")
done
i=0
for arch in $ARCHS; do
  echo "--- sm_$arch: csrc/math/nvcc_check.cu, csrc/cuda/kernels_check.cu (registers and spills per kernel)"
  if ! wait "${arch_pids[$i]}"; then cat "$OUT/ptxas_sm$arch.log"; exit 1; fi
  python tools/ptxas_report.py "$OUT/ptxas_sm$arch.log"
  i=$((i + 1))
done

launchers=$(ls csrc/cuda/*.cu | grep -v kernels_check.cu || true)
if [ -n "$launchers" ]; then
  last=${ARCHS##* }
  TORCH_INC=$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
  ABI=$(python -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
  echo "--- sm_$last: the launchers against torch's headers ($TORCH_INC)"
  pids=()
  for f in $launchers; do
    name=$(basename "$f" .cu)
    nvcc -std=c++20 -O3 "${TORCH_FLAGS[@]}" -arch=sm_$last -Xcompiler -Wall -Xcompiler -Wno-unknown-pragmas \
      -DMEMOPS_WITH_CUDA -D_GLIBCXX_USE_CXX11_ABI="$ABI" -Itools/nvcc_stub -I"$TORCH_INC" \
      -I"$TORCH_INC/torch/csrc/api/include" -c "$f" -o "$OUT/$name.o" > "$OUT/$name.log" 2>&1 &
    pids+=("$!:$f")
  done
  status=0
  for p in "${pids[@]}"; do
    if wait "${p%%:*}"; then echo "ok ${p#*:}"; else echo "FAILED ${p#*:}"; cat "$OUT/$(basename "${p#*:}" .cu).log"; status=1; fi
  done
  [ "$status" = 0 ] || exit 1
  # device-generic C++ that a CUDA build compiles with the host compiler and MEMOPS_WITH_CUDA (its
  # CUDA registration): the fused NTM sequence
  echo "--- host compiler, -DMEMOPS_WITH_CUDA: csrc/ntm_sequence.cpp"
  "${CXX:-c++}" -std=c++20 -fsyntax-only -Wall -Wno-unknown-pragmas -DMEMOPS_WITH_CUDA \
    -D_GLIBCXX_USE_CXX11_ABI="$ABI" -I"$TORCH_INC" -I"$TORCH_INC/torch/csrc/api/include" csrc/ntm_sequence.cpp
  echo "ok csrc/ntm_sequence.cpp"
fi
echo "nvcc checks passed"
