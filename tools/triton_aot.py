"""Ahead-of-time compile of every Triton kernel of memops/triton for sm_90, on a machine without a GPU.

Triton's compiler (Python front end, MLIR/LLVM, then ptxas) needs no GPU, only a target. This tool
compiles each kernel down to a cubin exactly as a launch on an H100 would: the same constexprs, the
same argument specialisation (Triton's own binder: pointer alignment, integers equal to 1 or divisible
by 16), the same default options (num_warps, num_stages), for the benchmark sizes
(benchmarks/_ops_sizes.py GPU_SIZES: "paper" and "large") and the four dtypes. It prints a table of
registers, spills and shared memory per compiled kernel and exits non-zero on any compile error, on a
kernel that needs more shared memory than an sm_90 block may have, or on a kernel of memops/triton that
no launch reached.

Where the constexprs come from: the launchers themselves. Each op (forward, then backward through
autograd) is called through memops' public API (backend="triton") on meta tensors of the benchmark
shapes, with `wrap_triton` in the op modules replaced by a recorder: every `kernel[grid](...)` the host
code would launch is written down (tensors as their dtypes) instead of run. So the block sizes, the
one-chunk / chunked path choices and the flags are those the host code picks, and a change there
changes what is compiled here, with no copy of that logic to keep in step. The recorded launches then
go to `kernel.warmup(...)`, Triton's compile-without-launch, with a stand-in driver that names the
target (cuda, sm_90, warp size 32) in place of a device.

    python tools/triton_aot.py                                   # everything (CI)
    python tools/triton_aot.py --sizes paper --dtypes float32 --kernels shift._shift_gather_kernel

Registers and spills are ptxas's (-v, which Triton runs with; its log is captured), shared memory is
the dynamic shared memory Triton allocates (the compiled kernel's metadata). Triton's cache goes to a
temporary directory, removed at exit. Never in interpreter mode: TRITON_INTERPRET is cleared before
triton is imported (this must run in a fresh process; the test suite runs it as a subprocess).
"""

import argparse
import contextlib
import io
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from unittest import mock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]

if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0"):
    raise RuntimeError("triton_aot: triton was imported in interpreter mode; run this tool in its own process")
os.environ.pop("TRITON_INTERPRET", None)  # Triton reads it when a kernel is defined: before the imports
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, set to silence its warning

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

import memops  # noqa: E402
from memops import triton as memops_triton  # noqa: E402  (registers the ops; the kernels are defined)
from memops.spec import SPECS, with_aliases  # noqa: E402

from _ops_sizes import GPU_SIZES, OPS, Op  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
MAX_SHARED = 227 * 1024  # bytes of shared memory one block may opt in to on sm_90 (H100)
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The benchmarked ops and variants, and content_scores (not benchmarked, but its kernels ship): its
# default (dot, no mask) and the other value of each of its flags.
CALLS = {**OPS, "content_scores": Op("content_scores"),
         "content_scores_cosine_mask": Op("content_scores", similarity="cosine", mask="random"),
         "attention_gru_mask": Op("attention_gru", mask="random")}
MODULES = [getattr(memops_triton, name) for name in
           ("attention_gru", "content_address", "content_scores", "ntm_address", "read", "sharpen", "shift", "write")]


class AOTDriver:
    """What JITFunction.warmup asks of the active driver, for a target with no device behind it."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return TARGET


def kernel_name(kernel):
    """<module>.<function>, e.g. shift._shift_gather_kernel (content_scores and others share names)."""
    return f"{kernel.fn.__module__.rsplit('.', 1)[-1]}.{kernel.fn.__name__}"


def all_kernels():
    """The names (kernel_name) of memops/triton's kernels: the jit functions that read tl.program_id
    (the others are device helpers, inlined into the kernels)."""
    return {kernel_name(value) for module in MODULES for value in vars(module).values()
            if isinstance(value, JITFunction) and "tl.program_id(" in value.src}


# ---------------------------------------------------------------------------------------------------
# Recording the launches


class Launch:
    """One `kernel[grid](*args, **kwargs)` of a launcher, tensors replaced by their dtypes."""

    def __init__(self, kernel, grid, args, kwargs):
        self.kernel, self.grid = kernel, grid
        self.args = tuple(a.dtype if isinstance(a, torch.Tensor) else a for a in args)
        self.kwargs = kwargs
        self.name = kernel_name(kernel)

    def key(self):
        return (self.name, repr(self.args), repr(sorted(self.kwargs.items())))

    def constexprs(self):
        def show(v):
            if isinstance(v, bool):
                return str(int(v))
            if isinstance(v, triton.language.dtype):
                return str(v)
            return f"{v:g}" if isinstance(v, float) else str(v)

        return " ".join(f"{k}={show(v)}" for k, v in self.kwargs.items())


def record_launches(call, dims, dtype):
    """The launches of memops.<op> forward and backward (one Op of CALLS) at `dims`, in `dtype`."""
    launches = []

    def wrap_triton(kernel):
        class Recorder:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: launches.append(Launch(kernel, grid, args, kwargs))

        return Recorder()

    spec = SPECS[call.op]
    dims = with_aliases(dims)  # attention_gru's facts and state width
    tensors = {}
    for name, letters in spec.tensors:
        if name == "erase" and call.variant.get("erase") is False:
            tensors[name] = None
        else:
            shape = [dims[letter] for letter in letters]
            tensors[name] = torch.empty(shape, dtype=dtype, device="meta", requires_grad=True)
    options = {}
    if "similarity" in call.variant:
        options["similarity"] = call.variant["similarity"]
    if call.mask:
        options["mask"] = torch.empty(dims["B"], dims["N"], dtype=torch.bool, device="meta")
    with contextlib.ExitStack() as stack:
        for module in MODULES:
            stack.enter_context(mock.patch.object(module, "wrap_triton", wrap_triton))
            # the launchers skip meta tensors (nothing to run on); here the launch is what we want
            stack.enter_context(mock.patch.object(module, "can_launch", lambda t: True))
        out = getattr(memops, call.op)(*tensors.values(), **options, backend="triton")
        leaves = [t for t in tensors.values() if t is not None]
        torch.autograd.grad(out, leaves, torch.empty_like(out))
    return launches


# ---------------------------------------------------------------------------------------------------
# Compiling


PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
PTXAS_REGS = re.compile(r"Used (\d+) registers")


@contextlib.contextmanager
def aot_environment():
    """Compiles for TARGET without a device: a stand-in driver (left in place: this process has no
    other), ptxas's report printed (compile_launch captures it), Triton's cache in a temporary
    directory, removed on exit."""
    cache = tempfile.mkdtemp(prefix="memops-triton-aot-")
    saved = os.environ.get("TRITON_CACHE_DIR")
    os.environ["TRITON_CACHE_DIR"] = cache  # read at each compile (forked workers inherit it)
    triton.knobs.nvidia.dump_ptxas_log = True
    driver.set_active(AOTDriver())
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_CACHE_DIR", None)
        else:
            os.environ["TRITON_CACHE_DIR"] = saved
        shutil.rmtree(cache, ignore_errors=True)


def compile_launch(launch):
    """Compile one launch for TARGET: a dict of registers, spills, shared memory, seconds, or error."""
    start = time.perf_counter()
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):  # knobs.nvidia.dump_ptxas_log prints ptxas -v's report
            compiled = launch.kernel.warmup(*launch.args, grid=launch.grid, **launch.kwargs)
    except Exception as e:  # noqa: BLE001  (a compile error of any kind is the report)
        # the error and its causes: an error inside a called @triton.jit function is the cause of the
        # caller's, and its message (the innermost) is the one that says what is wrong
        parts = []
        while e is not None:
            lines = [line for line in f"{type(e).__name__}: {e}".splitlines() if line.strip()]
            parts.append("\n".join(lines[:16]))
            e = e.__cause__
        return {"error": "\ncaused by ".join(parts), "seconds": time.perf_counter() - start}
    text = log.getvalue()
    regs = PTXAS_REGS.search(text)
    spills = PTXAS_SPILLS.search(text)
    if not compiled.asm.get("cubin") or not regs or not spills:
        return {"error": f"no cubin or no ptxas report (registers, spills) in:\n{text}",
                "seconds": time.perf_counter() - start}
    return {
        "seconds": time.perf_counter() - start,
        "regs": int(regs.group(1)),
        "stack": int(spills.group(1)),
        "spill_stores": int(spills.group(2)),
        "spill_loads": int(spills.group(3)),
        "shared": compiled.metadata.shared,
        "warps": compiled.metadata.num_warps,
    }


_JOBS = []  # the launches to compile, inherited by the forked workers


def _compile_job(i):
    return compile_launch(_JOBS[i])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(GPU_SIZES), choices=list(GPU_SIZES))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--kernels", nargs="+", metavar="MODULE.KERNEL",
                        help="only these kernels, e.g. shift._shift_gather_kernel (default: all)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="compiles in parallel (default: the CPUs this process may use)")
    args = parser.parse_args(argv)
    kernels = all_kernels()
    unknown = set(args.kernels or ()) - set(kernels)
    if unknown:
        parser.error(f"unknown kernels {sorted(unknown)}; the kernels: {sorted(kernels)}")
    wall = time.perf_counter()

    # every launch of every op at every size and dtype, each distinct one once (with the ops using it)
    jobs, used_by = {}, {}
    for size in args.sizes:
        for dtype_name in args.dtypes:
            for call_name, call in CALLS.items():
                for launch in record_launches(call, GPU_SIZES[size], DTYPES[dtype_name]):
                    if args.kernels and launch.name not in args.kernels:
                        continue
                    key = (size, dtype_name, *launch.key())
                    jobs.setdefault(key, launch)
                    used_by.setdefault(key, []).append(call_name)
    keys = sorted(jobs, key=lambda k: (k[2], args.sizes.index(k[0]),
                                       args.dtypes.index(k[1]), jobs[k].constexprs()))
    print(f"triton {triton.__version__}: {len(keys)} compiles for {TARGET} "
          f"(sizes {', '.join(f'{s} {GPU_SIZES[s]}' for s in args.sizes)}; {', '.join(args.dtypes)}), "
          f"{args.jobs} at a time", flush=True)

    _JOBS[:] = [jobs[k] for k in keys]
    with aot_environment():
        if args.jobs > 1 and len(_JOBS) > 1:
            with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
                results = list(pool.map(_compile_job, range(len(_JOBS))))
        else:
            results = [compile_launch(launch) for launch in _JOBS]

    # the table
    header = ("kernel", "dtype", "size", "constexprs", "regs", "spills st/ld", "stack", "smem B", "warps", "s")
    rows, failures = [], []
    for key, launch, r in zip(keys, _JOBS, results):
        size, dtype_name = key[0], key[1]
        if "error" in r:
            failures.append(f"{launch.name} {dtype_name} {size} [{launch.constexprs()}] "
                            f"(from {', '.join(sorted(set(used_by[key])))}):\n{r['error']}")
            rows.append((launch.name, dtype_name, size, launch.constexprs(), "FAILED", "", "", "", "",
                         f"{r['seconds']:.1f}"))
            continue
        if r["shared"] > MAX_SHARED:
            failures.append(f"{launch.name} {dtype_name} {size} [{launch.constexprs()}]: {r['shared']} bytes of "
                            f"shared memory, more than a block may have on sm_90 ({MAX_SHARED})")
        rows.append((launch.name, dtype_name, size, launch.constexprs(), str(r["regs"]),
                     f"{r['spill_stores']}/{r['spill_loads']}", str(r["stack"]), str(r["shared"]), str(r["warps"]),
                     f"{r['seconds']:.1f}"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, 1, 2, 3}
    for row in [header, *rows]:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells))

    ok = [r for r in results if "error" not in r]
    missing = sorted(set(args.kernels or kernels) - {launch.name for launch in _JOBS})
    if missing:
        failures.append(f"kernels no launcher reached at these sizes (not compiled): {', '.join(missing)}")
    spilled = sum(1 for r in ok if r["spill_stores"] or r["spill_loads"])
    print(f"\n{len(results)} compiles of {len({launch.name for launch in _JOBS})} kernels for sm_90, "
          f"{len(results) - len(ok)} failed; {spilled} with spills"
          + (f"; registers max {max(r['regs'] for r in ok)}, shared memory max "
             f"{max(r['shared'] for r in ok)} B" if ok else "")
          + f"; {sum(r['seconds'] for r in results):.0f} s of compiling, {time.perf_counter() - wall:.0f} s wall")
    for key, launch, r in zip(keys, _JOBS, results):
        if "error" not in r and (r["spill_stores"] or r["spill_loads"]):
            print(f"  spills: {launch.name} {key[1]} {key[0]} [{launch.constexprs()}]: {r['regs']} registers, "
                  f"{r['spill_stores']} B stored / {r['spill_loads']} B loaded")
    for failure in failures:
        print(f"\nFAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
