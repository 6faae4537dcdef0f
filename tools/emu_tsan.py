"""ThreadSanitizer over the CUDA emulator: memops' CUDA kernels checked for data races.

    python tools/emu_tsan.py [--no-build] [--ops read write ...] [--max-n N]

Builds memops._cuda_emu with -fsanitize=thread into build/tsan/ (`MEMOPS_CUDA_EMU=tsan`, outside the
package: it loads only with libtsan preloaded), then runs children of this Python with libtsan
preloaded and that build standing in for memops._cuda_emu. In the TSan build each emulated thread is
a TSan fiber and only the ordering CUDA guarantees (__syncthreads, __syncwarp, the launch) is
announced (csrc/cuda/emu/emu.cpp), so a shared-memory access that no barrier orders is reported
whatever the schedule, including a race that a shuffle hides from every schedule.

1. The check can fail: the self-test kernel `race_hidden_by_shuffle` must be reported, and
   `ordered` (the same exchange with the barriers) must not.
2. Every op's kernels, forward and backward (autograd), float32, on memops.testing.EMULATOR_CASES
   (the shapes that reach each launch path; --max-n skips the larger ones), blocks on 2 worker threads.
Exit status 1 on any report or failure (the child's report is printed), 0 when all are clean.
"""

import argparse
import glob
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "tsan")
TSAN_OPTIONS = "halt_on_error=1 exitcode=66 report_signal_unsafe=0 history_size=4"


def build():
    env = dict(os.environ, MEMOPS_CUDA_EMU="tsan", MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 1)))
    cmd = [sys.executable, "setup.py", "build_ext", "--build-lib", os.path.join(BUILD, "lib"),
           "--build-temp", os.path.join(BUILD, "temp")]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"emu_tsan: the TSan build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")


def built_module():
    found = glob.glob(os.path.join(BUILD, "lib", "memops", "_cuda_emu*.so"))
    if not found:
        sys.exit(f"emu_tsan: no TSan build in {BUILD} (run without --no-build)")
    return found[0]


def libtsan():
    path = subprocess.run(["g++", "-print-file-name=libtsan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        sys.exit("emu_tsan: g++ has no libtsan.so (ThreadSanitizer's runtime)")
    return os.path.realpath(path)


def run_child(args, module):
    """(exit status, output) of this script's --child mode under ThreadSanitizer."""
    env = dict(os.environ, LD_PRELOAD=libtsan(), TSAN_OPTIONS=TSAN_OPTIONS, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    # sys.executable, not a `python` on PATH: a wrapper script (pyenv) would get libtsan first
    cmd = [sys.executable, os.path.abspath(__file__), "--child", module] + args
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------
# the child: under libtsan, with the TSan build as memops._cuda_emu


def child(module, what):
    import importlib.util

    import memops  # noqa: F401  (the package, before its _cuda_emu is taken from the TSan build)

    spec = importlib.util.spec_from_file_location("memops._cuda_emu", module)
    ext = importlib.util.module_from_spec(spec)
    sys.modules["memops._cuda_emu"] = ext
    spec.loader.exec_module(ext)

    import torch

    from memops import _emu, testing

    torch.set_num_threads(1)
    _emu.configure("random", seed=1, workers=2)
    if what[0] == "selftest":
        ext.selftest(what[1], 64)
        print(f"selftest {what[1]}: clean")
        return
    op, max_n = what[1], int(what[2])
    for i, (B, H, N, W, S, variant) in enumerate(testing.EMULATOR_CASES[op]):
        if N > max_n:
            continue
        tensors, options = testing.sample_inputs(op, B=B, H=H, N=N, W=W, S=S, seed=i, dtype=torch.float32,
                                                 **variant)
        leaves = [t.requires_grad_() for t in tensors.values() if t is not None and t.is_floating_point()]
        print(f"{op} B={B} H={H} N={N} W={W} S={S} {variant}", flush=True)
        out = getattr(memops, op)(*tensors.values(), **options, backend="cuda_emu")
        torch.autograd.grad(out, leaves, torch.randn_like(out))


# ---------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-build", action="store_true", help="use the TSan build already in build/tsan")
    parser.add_argument("--ops", nargs="+", default=None, help="default: every op of EMULATOR_CASES")
    parser.add_argument("--max-n", type=int, default=None, help="skip cases with more slots than this")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1:])

    sys.path.insert(0, ROOT)
    from memops.testing import EMULATOR_CASES

    start = time.time()
    if not args.no_build:
        build()
        print(f"TSan build: {time.time() - start:.0f} s", flush=True)
    module = built_module()
    failed = []

    status, out = run_child(["selftest", "race_hidden_by_shuffle"], module)
    caught = status == 66 and "WARNING: ThreadSanitizer: data race" in out
    print(f"race_hidden_by_shuffle (a race no schedule shows): {'reported' if caught else 'NOT reported'}")
    if not caught:
        failed.append("race_hidden_by_shuffle")
        print(out[-3000:])
    status, out = run_child(["selftest", "ordered"], module)
    print(f"ordered (the same with __syncwarp / __syncthreads): {'clean' if status == 0 else 'REPORTED'}")
    if status != 0:
        failed.append("ordered")
        print(out[-3000:])

    for op in args.ops or list(EMULATOR_CASES):
        t = time.time()
        status, out = run_child(["op", op, str(args.max_n or sys.maxsize)], module)
        cases = sum(1 for line in out.splitlines() if line.startswith(op + " "))
        print(f"{op}: {cases} cases, {'clean' if status == 0 else f'FAILED (status {status})'} ({time.time() - t:.0f} s)",
              flush=True)
        if status != 0:
            failed.append(op)
            print(out[-6000:])
    print(f"emu_tsan: {'FAILED: ' + ', '.join(failed) if failed else 'no race reported'} ({time.time() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
