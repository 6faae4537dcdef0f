"""Builds memops._C, the compiled ops, with torch.utils.cpp_extension (ninja).

    pip install torch==2.13.0 ninja        # or a CUDA build of torch
    pip install --no-build-isolation -e .

CUDA sources (csrc/cuda/*.cu) are compiled only when torch is a CUDA build and nvcc is found;
MEMOPS_FORCE_CPU=1 skips them. MEMOPS_CUDA_ARCHS (e.g. "8.0;9.0") picks the GPU architectures.

MEMOPS_CUDA_EMU=1 also builds memops._cuda_emu, the test backend "cuda_emu": the CUDA launchers and
kernels compiled with g++ against the CPU emulator of csrc/cuda/emu/ (needs the CUDA headers, for
cuda_fp16.h and cuda_bf16.h: found from CUDA_HOME, /usr/local/cuda* or nvcc; no GPU needed).
"""

import glob
import os
import shutil
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
    cpu_sources = ["csrc/ops.cpp", "csrc/autograd.cpp", "csrc/module.cpp", "csrc/ntm_sequence.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
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


def cuda_include_dir():
    """The CUDA toolkit's include directory (the one with cuda_fp16.h), or None."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    homes += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    nvcc = shutil.which("nvcc")
    if nvcc:
        homes.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in homes:
        if home and os.path.exists(os.path.join(home, "include", "cuda_fp16.h")):
            return os.path.join(home, "include")
    return None


def emulated_extension(tsan=False):
    """memops._cuda_emu: csrc/cuda/<op>.cu built with g++ against csrc/cuda/emu/ (one generated source
    per launcher: the emulator's header, then the .cu), and csrc/ops.cpp / autograd.cpp, all with
    -Dmemops=memops_cuda_emu: the ops register as torch.ops.memops_cuda_emu.<op> for CPU tensors.
    tsan: the ThreadSanitizer build that tools/emu_tsan.py makes and runs (-fsanitize=thread)."""
    include = cuda_include_dir()
    if include is None:
        raise SystemExit("MEMOPS_CUDA_EMU=1 needs the CUDA headers (cuda_fp16.h); set CUDA_HOME")
    gen = os.path.join("build", "cuda_emu")
    os.makedirs(gen, exist_ok=True)
    sources = ["csrc/ops.cpp", "csrc/autograd.cpp", "csrc/ntm_sequence.cpp", "csrc/cuda/emu/emu.cpp",
               "csrc/cuda/emu/module.cpp", "csrc/cuda/emu/selftest.cpp"]
    for cu in sorted(glob.glob("csrc/cuda/*.cu")):
        name = os.path.basename(cu)
        if name == "kernels_check.cu":
            continue
        if "<<<" in open(cu).read():  # launches must go through launch_kernel (launch.h) to be emulated
            print(f"MEMOPS_CUDA_EMU: {cu} launches with <<<...>>>, not launch_kernel(): not emulated")
            continue
        out = os.path.join(gen, name[: -len(".cu")] + ".cpp")
        text = f'// generated by setup.py (MEMOPS_CUDA_EMU=1)\n#include "emu/launcher.h"\n#include "{name}"\n'
        if not os.path.exists(out) or open(out).read() != text:
            with open(out, "w") as f:
                f.write(text)
        sources.append(out)
    flags = ["-O2", "-Wall", "-Wno-unknown-pragmas", "-fno-math-errno", "-fno-extern-tls-init",
             "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
             "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]
    if tsan:
        flags += ["-fsanitize=thread", "-g1"]
    return CppExtension(
        "memops._cuda_emu",
        sources,
        include_dirs=[os.path.join(HERE, "csrc", "cuda"), include],
        define_macros=[("MEMOPS_CUDA_EMU", None), ("memops", "memops_cuda_emu")],
        extra_compile_args={"cxx": flags},
        extra_link_args=["-fsanitize=thread"] if tsan else [],
    )


# "1": both extensions; "only": the emulated one alone; "tsan": the emulated one with ThreadSanitizer
# (only for tools/emu_tsan.py, which builds it outside the package: it loads only under libtsan)
EMU = os.environ.get("MEMOPS_CUDA_EMU", "0")
extensions = [] if EMU in ("only", "tsan") else [extension()]
if EMU in ("1", "only", "tsan"):
    extensions.append(emulated_extension(tsan=EMU == "tsan"))

setup(
    version=VERSION,
    ext_modules=extensions,
    cmdclass={"build_ext": BuildExtension},
)
