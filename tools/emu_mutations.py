"""Deliberate bugs in the CUDA kernels, one at a time: each must make the emulated-CUDA tests fail.

Works in a scratch copy of the checkout (git worktree of HEAD plus the working tree's changes), so
the real tree and its build are never touched. For each mutation: edit the source, rebuild
memops._cuda_emu there (MEMOPS_CUDA_EMU=only, in place), run the emulator's tests of the op it
touches. Prints a table (mutation, tests, result) and exits non-zero if a mutation survives (the
tests passed with the bug in). About two minutes per mutation (the rebuild). From the checkout:

    python tools/emu_mutations.py            # all of them
    python tools/emu_mutations.py syncwarp   # those whose name contains "syncwarp"
    python tools/emu_mutations.py --tsan barrier   # checked by ThreadSanitizer (tools/emu_tsan.py on the
                                                   # op) instead of the tests: the missing-barrier ones
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = None  # the scratch copy
TSAN = False  # --tsan: tools/emu_tsan.py is the check

# (name, file, text, replacement, pytest -k expression)
MUTATIONS = [
    ("barrier removed before the reduction scratch is reused", "csrc/cuda/common.cuh",
     "  __syncthreads();  // `shared` may still be read by a previous reduction\n", "",
     "every_path and sharpen"),
    ("__syncwarp removed (lane 0's coef[] read before it is written)", "csrc/cuda/similarity_kernels.cuh",
     "    __syncwarp();  // coef[] of this slot, written by the group's lane 0\n", "",
     "every_path and content_address"),
    ("wrong shuffle width (G / 2 in group_reduce)", "csrc/cuda/common.cuh",
     "__shfl_xor_sync(0xffffffffu, v, offset, G)", "__shfl_xor_sync(0xffffffffu, v, offset, G > 1 ? G / 2 : 1)",
     "every_path and read"),
    ("early return before a barrier (threads past N exit)", "csrc/cuda/sharpen_kernels.cuh",
     "  const A g = load<A>(gamma + row);\n\n  A w_max", "  const A g = load<A>(gamma + row);\n  if (threadIdx.x >= N) return;\n\n  A w_max",
     "every_path and sharpen"),
    ("off-by-one in a chunk bound (content_address forward)", "csrc/cuda/content_address_kernels.cuh",
     "count = min(chunk, N - first);", "count = min(chunk, N - first - 1);",
     "every_path and content_address"),
    ("wrong shared-memory offset (at_offset + 16 bytes)", "csrc/cuda/similarity_kernels.cuh",
     "return reinterpret_cast<U*>(dynamic_shared<unsigned char>() + offset);",
     "return reinterpret_cast<U*>(dynamic_shared<unsigned char>() + offset + 16);",
     "every_path and content_address"),
    ("barrier removed between writing the keys and reading them", "csrc/cuda/content_address_kernels.cuh",
     "  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) bs[h] = load<A>(beta + b * H + h);\n  __syncthreads();\n",
     "  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) bs[h] = load<A>(beta + b * H + h);\n",
     "every_path and content_address"),
]


def build():
    if TSAN:
        return True  # run_tsan builds (the ThreadSanitizer build, in the scratch copy's build/tsan)
    env = dict(os.environ, MEMOPS_CUDA_EMU="only", MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
    return r.returncode == 0


def run_tsan(ops, build=False):
    """tools/emu_tsan.py of the scratch copy on `ops` (building it first if asked): (status, lines)."""
    cmd = [sys.executable, "tools/emu_tsan.py", "--ops", *ops] + ([] if build else ["--no-build"])
    r = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith(("emu_tsan", "SUMMARY", "TSan build"))]
    return r.returncode, lines


def run_tests(expr):
    if TSAN:  # the op is the expression's last word; emu_tsan.py rebuilds what the mutation touched
        return run_tsan([expr.split()[-1]], build=True)
    env = dict(os.environ, PYTHONPATH=ROOT)  # the scratch copy's memops, not the checkout's
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        "tests/ops/test_cuda_emu.py", "-k", expr], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [l for l in r.stdout.splitlines() if l.startswith(("FAILED", "ERROR")) or " passed" in l
             or " failed" in l]
    return r.returncode, lines


def scratch_copy():
    """A copy of the checkout's tracked and new files (not .git, not build outputs)."""
    root = tempfile.mkdtemp(prefix="memops-mutations-")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=CHECKOUT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if os.path.isfile(os.path.join(CHECKOUT, f)):
            os.makedirs(os.path.join(root, os.path.dirname(f)), exist_ok=True)
            shutil.copy2(os.path.join(CHECKOUT, f), os.path.join(root, f))
    return root


def main(filters):
    global ROOT
    ROOT = scratch_copy()
    print(f"scratch copy: {ROOT}", flush=True)
    rows = []
    # the unmutated kernels first: every test the mutations use must pass
    assert build(), "the scratch copy does not build"
    chosen = [m for m in MUTATIONS if not filters or any(f in m[0] for f in filters)]
    if TSAN:
        rc, lines = run_tsan(sorted({m[4].split()[-1] for m in chosen}), build=True)
    else:
        rc, lines = run_tests(" or ".join(f"({m[4]})" for m in MUTATIONS))
    assert rc == 0, f"the tests fail without a mutation: {lines}"
    print(f"baseline: {lines[-1] if lines else ''}", flush=True)
    for name, path, text, replacement, expr in chosen:
        full = os.path.join(ROOT, path)
        original = open(full).read()
        assert original.count(text) >= 1, f"{name}: the text to mutate is not in {path}"
        start = time.time()
        try:
            with open(full, "w") as f:
                f.write(original.replace(text, replacement, 1))
            if not build():
                rows.append((name, expr, "BUILD FAILED", ""))
                continue
            rc, lines = run_tests(expr)
            verdict = "caught" if rc != 0 else "SURVIVED"
            first = next((l for l in lines if l.startswith(("FAILED", "ERROR", "SUMMARY"))), lines[-1] if lines else "")
            rows.append((name, expr, verdict, f"{first[:150]} ({time.time() - start:.0f} s)"))
        finally:
            with open(full, "w") as f:
                f.write(original)
        print(rows[-1], flush=True)
    shutil.rmtree(ROOT, ignore_errors=True)
    print(f"\n| mutation | {'op (tools/emu_tsan.py)' if TSAN else 'tests (-k)'} | result | first failure |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all(r[2] == "caught" for r in rows) else 1


if __name__ == "__main__":
    TSAN = "--tsan" in sys.argv
    sys.exit(main([a for a in sys.argv[1:] if a != "--tsan"]))
