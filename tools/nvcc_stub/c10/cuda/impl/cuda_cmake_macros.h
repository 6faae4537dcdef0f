// Stand-in for the header that a CUDA build of torch generates and a CPU build lacks, so that
// tools/nvcc_check.sh can compile the CUDA launchers against a CPU torch's headers (compile only:
// nothing is linked or run). A CUDA build of torch has its own copy and never sees this one.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
