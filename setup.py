"""Builds memops._C, the compiled ops, with torch.utils.cpp_extension (ninja).

    pip install torch==2.13.0 ninja        # or a CUDA build of torch
    pip install --no-build-isolation -e .

CUDA sources (csrc/cuda/*.cu) are compiled only when torch is a CUDA build and nvcc is found;
MEMOPS_FORCE_CPU=1 skips them. MEMOPS_CUDA_ARCHS (e.g. "8.0;9.0") picks the GPU architectures.
"""

import glob
import os
import subprocess

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as e:  # pip without --no-build-isolation builds in an env without torch
    raise SystemExit(
        "memops builds against the torch you have installed. Install torch first, then run\n"
        "    pip install --no-build-isolation -e .\n"
        f"({e})"
    )

VERSION = "0.1.0"
HERE = os.path.dirname(os.path.abspath(__file__))


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True).strip()
    except Exception:
        return "unknown"


def extension():
    cpu_sources = ["csrc/ops.cpp", "csrc/autograd.cpp", "csrc/module.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    # csrc/cuda/kernels_check.cu is the nvcc compile check (tools/nvcc_check.sh), not a source
    cuda_sources = sorted(f for f in glob.glob("csrc/cuda/*.cu") if not f.endswith("kernels_check.cu"))
    with_cuda = (
        torch.version.cuda is not None
        and CUDA_HOME is not None
        and bool(cuda_sources)
        and os.environ.get("MEMOPS_FORCE_CPU", "0") != "1"
    )
    archs = os.environ.get("MEMOPS_CUDA_ARCHS", os.environ.get("TORCH_CUDA_ARCH_LIST", "")) if with_cuda else ""
    if archs:
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    macros = [
        ("MEMOPS_VERSION", f'"{VERSION}+{git_commit()}"'),
        ("MEMOPS_TORCH_VERSION", f'"{torch.__version__}"'),
        ("MEMOPS_CUDA_ARCHS", f'"{archs}"'),
    ]
    # -fno-math-errno and -fno-trapping-math (as PyTorch's own build) let sqrt and the branch-free
    # exp vectorise: errno and FP traps are never read. No -ffast-math: inf and NaN stay IEEE.
    # The C++ standard is torch's (BuildExtension adds it: C++20 for torch 2.13).
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Wno-unknown-pragmas"]
    if with_cuda:
        macros.append(("MEMOPS_WITH_CUDA", None))
        return CUDAExtension(
            "memops._C",
            cpu_sources + cuda_sources,
            define_macros=macros,
            # No --use_fast_math: its approximate exp, division and flushed denormals would move the
            # results off the reference by more than float32's tolerance; the kernels are bound by
            # memory traffic and launches, not arithmetic. -lineinfo: ncu and compute-sanitizer show
            # source lines.
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(
        "memops._C", cpu_sources, define_macros=macros, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"]
    )


setup(
    version=VERSION,
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
)
