// Included first by each launcher of the emulated build (setup.py generates one source per
// csrc/cuda/<op>.cu: this header, then the .cu): the emulator, and the launchers' CUDA registrations
// turned into CPU ones. The namespace is memops_cuda_emu (the build passes -Dmemops=memops_cuda_emu).
#pragma once

#include "emu.h"

#include <torch/library.h>

#undef TORCH_LIBRARY_IMPL
#define TORCH_LIBRARY_IMPL(ns, k, m) _TORCH_LIBRARY_IMPL(ns, CPU, m, C10_UID)
