"""The probe (torch, the GPU, the toolchain, the commit) and the build of the extension with its CUDA
kernels, checked in a fresh interpreter. Each runs as a subprocess (proc.run_command)."""

import os
import re
import sys

from .proc import last_error_line, log, python_json, run_command, subprocess_env

PROBE = r'''
import json, os, platform, re, shutil, subprocess, sys
info = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
        "cpu_count": os.cpu_count()}
def run(cmd):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else None
    except Exception:
        return None
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = bool(torch.cuda.is_available())
    if info["cuda_available"]:
        info["device_count"] = torch.cuda.device_count()
        p = torch.cuda.get_device_properties(0)
        info["device_name"] = p.name
        info["capability"] = f"{p.major}.{p.minor}"
        info["total_memory_gib"] = round(p.total_memory / 2**30, 1)
        info["sm_count"] = p.multi_processor_count
        try:
            v = torch._C._cuda_getDriverVersion()
            info["driver_cuda_version"] = f"{v // 1000}.{v % 1000 // 10}"
        except Exception:
            pass
    try:
        from torch.utils import cpp_extension
        info["cuda_home"] = cpp_extension.CUDA_HOME
        info["ninja"] = bool(cpp_extension.is_ninja_available())
    except Exception as e:
        info["cpp_extension_error"] = repr(e)
except Exception as e:
    info["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import triton
    info["triton"] = triton.__version__
except Exception as e:
    info["triton_error"] = f"{type(e).__name__}: {e}"
nvcc = os.path.join(info["cuda_home"], "bin", "nvcc") if info.get("cuda_home") else shutil.which("nvcc")
if nvcc and os.path.exists(nvcc):
    out = run([nvcc, "--version"]) or ""
    m = re.search(r"release ([0-9.]+)", out)
    info["nvcc"] = (m.group(1) if m else (out.splitlines() or ["?"])[-1]) if out else None
    info["nvcc_path"] = nvcc
smi = shutil.which("nvidia-smi")
if smi:
    out = run([smi, "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"])
    if out:
        info["nvidia_smi"] = out.splitlines()[0]
        info["driver"] = out.splitlines()[0].split(",")[0].strip()
for mod in ("pip", "setuptools", "pytest"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as e:
        info[mod] = None
print("SUITE_JSON " + json.dumps(info))
'''

# The commit, by memops.testing.git_commit (the benchmarks' helper), in its own interpreter: the
# suite's process must not load memops._C, which the build then replaces on disk.
COMMIT = r'''
import json
from memops.testing import git_commit
print("SUITE_JSON " + json.dumps({"commit": git_commit()}))
'''

BUILD_CHECK = r'''
import json
info = {}
try:
    import memops
    from memops import _backend
    info["file"] = memops.__file__
    info["build_info"] = memops.build_info()
    info["backends_cuda"] = memops.available_backends("cuda")
    info["triton_why_not"] = _backend._triton_why_not("cuda")
except Exception as e:
    info["error"] = f"{type(e).__name__}: {e}"
print("SUITE_JSON " + json.dumps(info, default=str))
'''


def probe(log_path):
    """(what PROBE found, or None; its run result)."""
    return python_json(PROBE, env=subprocess_env(), timeout=180, log_path=log_path)


def no_gpu_reason(info):
    if info.get("torch_error"):
        return f"torch cannot be imported ({info['torch_error']})"
    if not info.get("torch_cuda"):
        return f"torch {info.get('torch')} is a CPU-only build (torch.version.cuda is None)"
    return (f"torch {info.get('torch')} (CUDA {info.get('torch_cuda')}) sees no GPU "
            "(torch.cuda.is_available() is False: no device visible, or no driver)")


def checkout_commit(log_path):
    """memops.testing.git_commit() of the checkout (MEMOPS_BACKEND=reference: no warning about an
    extension not built yet); "unknown" if it cannot run."""
    info, _ = python_json(COMMIT, env=subprocess_env({"MEMOPS_BACKEND": "reference"}), timeout=120, log_path=log_path)
    return (info or {}).get("commit") or "unknown"


# ---------------------------------------------------------------------------------------------------
# Build


_COMPILER_ERROR = re.compile(r"(\.(cu|cuh|cpp|cc|h|hpp)(\(\d+\)|:\d+:(\d+:)?)).*\berror\b|\bfatal error\b|nvcc fatal")
_PYTHON_ERROR = re.compile(r"^\s*(\w+\.)*(RuntimeError|OSError|ImportError|ModuleNotFoundError|FileNotFoundError|"
                           r"ValueError|TypeError|CalledProcessError|SystemExit|DistutilsError|CompileError)\b:")


def compiler_errors(log_path, limit=8):
    """The first compiler error lines of a build log (nvcc's "file.cu(12): error: ...", gcc's
    "file.cpp:3:4: error: ..."); pip's own last lines ("ERROR: Failed building ...") say less."""
    found, exceptions = [], []
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("$ ") or re.match(r"^\[\d+/\d+\]", line):
                    continue  # a command line, not its output
                if _COMPILER_ERROR.search(line) and line.strip() not in found:
                    found.append(line.strip()[:400])
                    if len(found) >= limit:
                        break
                elif _PYTHON_ERROR.match(line) and len(exceptions) < limit:
                    exceptions.append(line.strip()[:400])
    except OSError:
        pass
    return found or exceptions  # no compiler error: the exception that stopped setup.py (a CUDA
    #                             version mismatch, a missing module), if any


def _ninja_echo(line):
    m = re.match(r"^\[(\d+)/(\d+)\]", line)
    if not m:
        return "  " + line.strip()[:200] if re.search(r"\berror\b", line) and "-Werror" not in line else None
    source = re.search(r"\s-c\s+(\S+)", line)
    what = os.path.basename(source.group(1)) if source else ("link" if " -shared " in line or "-o " in line else "")
    return f"  build [{m.group(1)}/{m.group(2)}] {what}"


def stage_build(args, info, paths, timeout):
    """pip install -e . for the GPU's compute capability (setup.py build_ext --inplace if pip cannot
    run it): (stage, None, errors)."""
    stage = {"status": "error", "seconds": 0.0, "note": None}
    extra = {"MAX_JOBS": str(args.jobs or os.cpu_count() or 4)}
    archs = args.archs or info.get("capability")
    if archs:
        extra["MEMOPS_CUDA_ARCHS"] = archs
    env = subprocess_env(extra)
    env.pop("MEMOPS_FORCE_CPU", None)
    stage["env"] = extra
    pip = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-v", "-e", "."]
    log(f"build: python {' '.join(pip[1:])} (MEMOPS_CUDA_ARCHS={archs or '-'}, MAX_JOBS={extra['MAX_JOBS']}, "
        f"timeout {timeout:.0f} s, log {os.path.relpath(paths['build_log'])})")
    if not info.get("ninja"):
        log("  warning: ninja is not available: the extension compiles one file at a time (slow)")
    run = run_command(pip, timeout=timeout, log_path=paths["build_log"], env=env, echo=_ninja_echo)
    stage.update(command=run["command"], seconds=run["seconds"], returncode=run["returncode"])
    if run["returncode"] != 0 and not run["timed_out"]:
        text = "\n".join(run["tail"])
        compile_failed = (any(s in text for s in ("ninja: build stopped", "Error compiling objects", "error: command"))
                          or any(_COMPILER_ERROR.search(e) for e in compiler_errors(paths["build_log"])))
        left = timeout - run["seconds"]
        if not compile_failed and left > 30:
            fallback = [sys.executable, "setup.py", "build_ext", "--inplace"]
            log(f"  pip could not build ({last_error_line(run['tail'])}); trying {' '.join(fallback[1:])}")
            run2 = run_command(fallback, timeout=left, log_path=paths["build_log"], env=env, echo=_ninja_echo)
            stage["fallback"] = {"command": run2["command"], "returncode": run2["returncode"], "seconds": run2["seconds"]}
            stage["seconds"] = round(stage["seconds"] + run2["seconds"], 1)
            if run2["returncode"] == 0:
                stage.update(status="ok", note=f"pip failed (rc {run['returncode']}); built in place with setup.py")
                return stage, None, []
            run = run2
    if run["returncode"] == 0:
        stage["status"] = "ok"
        return stage, None, []
    stage["status"] = "timeout" if run["timed_out"] else "failed"
    stage["tail"] = run["tail"][-30:]
    stage["compiler_errors"] = compiler_errors(paths["build_log"])
    first = stage["compiler_errors"][0] if stage["compiler_errors"] else last_error_line(run["tail"])
    why = (f"timed out after {run['seconds']:.0f} s" if run["timed_out"] else
           run["error"] or f"exit code {run['returncode']}: {first}")
    stage["note"] = why
    return stage, None, [f"build: {why} (log {paths['build_log']})"]


def stage_build_check(paths, gpu):
    """memops.build_info() in a fresh interpreter: (stage, info, errors)."""
    info, run = python_json(BUILD_CHECK, env=subprocess_env(gpu=gpu), timeout=180, log_path=paths["build_log"])
    stage = {"status": "ok", "seconds": run["seconds"], "command": "python -c 'memops.build_info()'"}
    errors = []
    if info is None or "error" in info:
        why = (info or {}).get("error") or run["error"] or f"exit code {run['returncode']}: {last_error_line(run['tail'])}"
        stage.update(status="failed", note=why)
        return stage, info or {}, [f"build check: import memops failed: {why}"]
    build = info.get("build_info") or {}
    if not build.get("built"):
        errors.append(f"build check: the compiled ops are not loaded: {build.get('error')}")
    elif gpu and not build.get("with_cuda"):
        errors.append("build check: memops.build_info()['with_cuda'] is False: the extension has no CUDA kernels "
                      "(nvcc not found, CUDA_HOME unset, or a CPU-only torch at build time)")
    if gpu and "triton" not in (info.get("backends_cuda") or []):
        errors.append(f"build check: the triton backend cannot run on cuda: {info.get('triton_why_not')}")
    if errors:
        stage.update(status="failed", note="; ".join(errors))
    stage["note"] = stage.get("note") or f"{build} from {info.get('file')}"
    return stage, info, errors
