"""Time each memops op, forward and forward+backward: the compiled backends against the reference.

    python benchmarks/bench_ops.py                  # every op, paper and large size, CSV row per timing
    python benchmarks/bench_ops.py --quick          # short timings, torch.compile at paper size only
    python benchmarks/bench_ops.py --ops ntm_address read --sizes paper --no-compile --no-csv
    python benchmarks/bench_ops.py --device cuda    # cpp (the CUDA kernels) and triton columns, GB/s

For every op × size × pass (fwd: the op on inputs that need no gradient; fwd+bwd: the op, then
torch.autograd.grad of its output with a fixed random output gradient with respect to every floating
input) it times
  cpp       memops.<op>(..., backend="cpp") (and any other non-reference backend the build has for
            the device: each gets a column; on CUDA that is "triton". On a CPU the Triton interpreter
            is never timed unless --backends names it),
  eager     memops.reference.<op>, the plain-PyTorch specification, as a model would run it,
  compiled  torch.compile(memops.reference.<op>, dynamic=False) (inductor); compiled and run once per
            size and pass before timing, so compile time is excluded (it is printed, and stored in
            the compile_s column),
checks that each contender's output (and gradients) match eager's, prints a table and appends one
CSV row per timing to benchmarks/results/ops.csv (CPU) or benchmarks/results/ops_gpu.csv (CUDA).
See benchmarks/README.md for the sizes, the byte model and the columns.

On CUDA it also measures the device's copy bandwidth (a 1 GiB copy_, timed the same way) and gives
each timing its achieved GB/s (traffic_bytes / median) and that as a fraction of the copy bandwidth.

Targets (the issues'; each row says whether it is met; nothing fails on them):
  CPU:   forward+backward at paper size at least 3x faster than eager;
  CUDA:  for each GPU backend, forward+backward at paper size at least 10x faster than eager and 3x
         faster than torch.compile(reference); at the large size at least 0.85 of the copy bandwidth.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import memops  # noqa: F401
except ImportError:  # not installed (pip install -e .): the checkout this script is in
    sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness  # noqa: E402

import memops  # noqa: E402
from memops import reference  # noqa: E402
from memops.testing import random_inputs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CSV = os.path.join(HERE, "results", "ops.csv")
DEFAULT_GPU_CSV = os.path.join(HERE, "results", "ops_gpu.csv")

PAPER = dict(B=64, H=1, N=128, W=20, S=3)  # NTM paper: 128 slots of width 20, one head
SIZES = {  # the CPU's sizes
    "paper": PAPER,
    "large": dict(B=16, H=1, N=4096, W=64, S=3),  # 16 MiB of float32 memory
}
GPU_SIZES = {  # on CUDA devices
    "paper": PAPER,
    "large": dict(B=64, H=1, N=8192, W=128, S=3),  # 256 MiB of float32 memory: far past any L2
}


def sizes_for(device_type):
    return GPU_SIZES if device_type == "cuda" else SIZES


# Targets, per device type. Each applies to one size and some passes, for every memops backend timed:
# "eager" / "compiled": at least that many times faster than that contender; "bandwidth": at least
# that fraction of the device's measured copy bandwidth. Reported in the table and summary, never asserted.
TARGETS = {
    "cpu": ({"size": "paper", "passes": ("fwd+bwd",), "eager": 3.0},),
    "cuda": ({"size": "paper", "passes": ("fwd+bwd",), "eager": 10.0, "compiled": 3.0},
             {"size": "large", "passes": ("fwd", "fwd+bwd"), "bandwidth": 0.85}),
}


class Op:
    """One op called one way: `inputs` the floating tensors (all differentiable), `fixed` the rest."""

    def __init__(self, op, inputs, fixed=None, mask=False):
        self.op, self.inputs, self.fixed, self.mask = op, inputs, fixed or {}, mask

    def backend_call(self, backend):
        """memops.<op>(..., backend=backend), the public API a model calls."""
        fn, fixed = getattr(memops, self.op), self.fixed
        return lambda **kw: fn(**kw, **fixed, backend=backend)

    def reference_call(self, compiled_fn=None):
        """memops.reference.<op> (or a torch.compile of it) with this variant's fixed arguments."""
        fn, fixed = compiled_fn or getattr(reference, self.op), self.fixed
        return lambda **kw: fn(**kw, **fixed)


OPS = {
    "content_address": Op("content_address", ("memory", "keys", "beta"), dict(similarity="cosine")),
    "shift": Op("shift", ("weights", "kernel")),
    "sharpen": Op("sharpen", ("weights", "gamma")),
    "ntm_address": Op("ntm_address", ("memory", "keys", "beta", "gate", "kernel", "gamma", "prev_weights")),
    "read": Op("read", ("memory", "weights")),
    "write": Op("write", ("memory", "weights", "erase", "add")),
    # variants, run when named in --ops
    "content_address_dot_mask": Op("content_address", ("memory", "keys", "beta"), dict(similarity="dot"), mask=True),
    "write_noerase": Op("write", ("memory", "weights", "add"), dict(erase=None)),
}
DEFAULT_OPS = ["content_address", "shift", "sharpen", "ntm_address", "read", "write"]
PASSES = ["fwd", "fwd+bwd"]

CSV_FIELDS = harness.ENV_FIELDS + [
    "op", "size", "shape", "dtype", "pass", "backend", "median_us",
    "speedup_vs_eager", "speedup_vs_compiled", "compile_s",
]
GPU_CSV_FIELDS = CSV_FIELDS + ["bytes", "gbps", "copy_gbps", "bandwidth_fraction"]


# ---------------------------------------------------------------------------------------------------
# The byte model

# The shape of every tensor the ops read, by argument name, and of each op's output.
TENSOR_DIMS = {"memory": "BNW", "keys": "BHW", "beta": "BH", "gate": "BH", "gamma": "BH", "kernel": "BHS",
               "weights": "BHN", "prev_weights": "BHN", "erase": "BHW", "add": "BHW"}
OUTPUT_DIMS = {"content_address": "BHN", "shift": "BHN", "sharpen": "BHN", "ntm_address": "BHN",
               "read": "BHW", "write": "BNW"}


def _numel(letters, dims):
    n = 1
    for letter in letters:
        n *= dims[letter]
    return n


def traffic_bytes(op_name, dims, pass_, itemsize):
    """The minimal device-memory traffic of one call of `op_name` (a key of OPS), in bytes.

    Every input is read once and every output (and gradient) written once, in the storage dtype
    (`itemsize` bytes an element: 4 for float32); nothing is counted twice, nothing for scratch. With
    the sizes B, H, N, W, S the elements are

      op                        read                                              written
      content_address           memory BNW + keys BHW + beta BH                   weights BHN
      content_address_dot_mask  the same, and the mask: B*N bytes (bool)          weights BHN
      shift                     weights BHN + kernel BHS                          BHN
      sharpen                   weights BHN + gamma BH                            BHN
      ntm_address               memory BNW + keys BHW + beta, gate, gamma 3*BH
                                + kernel BHS + prev_weights BHN                   BHN
      read                      memory BNW + weights BHN                          BHW
      write                     memory BNW + weights BHN + erase BHW + add BHW    BNW
      write_noerase             memory BNW + weights BHN + add BHW                BNW

    fwd:      (inputs + output) * itemsize (+ the mask's bytes).
    fwd+bwd:  the forward's traffic, then the output gradient read once and one gradient per
              floating input written once (each the size of its input):
              2 * (inputs + output) * itemsize (+ the mask's bytes, read once).
    A backward kernel that reads an input again (the forward's read of `memory` does not carry over
    to a separate backward kernel) moves more than this: the count is a lower bound for any
    implementation, and bytes / time a lower bound on the bandwidth it achieves.

    Example: write at B=64, H=1, N=8192, W=128, float32: fwd = (2*BNW + BHN + 2*BHW) * 4 = 539,033,600
    bytes (514 MiB); fwd+bwd twice that. shift and sharpen move only B*H*N-sized tensors (4 MiB fwd
    at that size): their time is launch latency more than bandwidth.
    """
    op = OPS[op_name]
    inputs = sum(_numel(TENSOR_DIMS[name], dims) for name in op.inputs)
    output = _numel(OUTPUT_DIMS[op.op], dims)
    mask = dims["B"] * dims["N"] if op.mask else 0  # bool, one byte a slot
    elements = inputs + output
    if pass_ == "fwd+bwd":
        elements *= 2
    elif pass_ != "fwd":
        raise ValueError(f"unknown pass {pass_!r}")
    return elements * itemsize + mask


def copy_bandwidth(device, nbytes, min_run_time):
    """The device's copy bandwidth: dst.copy_(src) of two float32 tensors of `nbytes`, timed as the
    ops are (harness.time_us, median); the bytes moved are read + written, 2 * nbytes.

    Returns {"bytes", "median_us", "gbps"} (GB = 1e9 bytes).
    """
    n = max(1, nbytes // 4)
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    us = harness.time_us(lambda: dst.copy_(src), device, min_run_time=min_run_time)
    moved = 2 * n * 4
    return {"bytes": moved, "tensor_bytes": n * 4, "median_us": us, "gbps": moved / us / 1e3}


# ---------------------------------------------------------------------------------------------------
# Inputs, calls, checks


def make_inputs(op, dims, dtype, device, seed):
    """Random inputs in the ranges a model gives them (never zeros), and a fixed output gradient."""
    gen = torch.Generator().manual_seed(seed)
    B, H, N, W, S = (dims[k] for k in "BHNWS")
    tensors = random_inputs(op.inputs, B, H, N, W, S, gen, dtype=dtype, device=device)
    extra = {"mask": (torch.rand(B, N, generator=gen) > 0.2).to(device)} if op.mask else {}
    out_shape = (B, N, W) if op.op == "write" else (B, H, W) if op.op == "read" else (B, H, N)
    grad = torch.randn(*out_shape, generator=gen).to(device=device, dtype=dtype)
    return tensors, extra, grad


def make_callable(call, tensors, extra, grad, backward):
    """fn() running one forward (and backward) pass of `call` on fresh-grad-free inputs."""
    if not backward:
        return lambda: call(**tensors, **extra)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    values = list(leaves.values())
    return lambda: torch.autograd.grad(call(**leaves, **extra), values, grad)


def _close(a, b, rtol, atol):
    """Normwise: max |a - b| <= atol + rtol max |b| for each output (a sanity check, not the accuracy
    test: `memops check` is that). Elementwise would flag the float32 rounding of sums over 4096 slots."""
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return len(a) == len(b) and all(
        x.shape == y.shape and bool(((x.double() - y.double()).abs().max() <= atol + rtol * y.double().abs().max()))
        for x, y in zip(a, b)
    )


def _one_line(e, limit=300):
    return f"{type(e).__name__}: {' '.join(str(e).split())[:limit]}"


# CUDA errors after which the context is unusable: every later call fails the same way.
_STICKY_CUDA_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                       "illegal instruction", "misaligned address", "an illegal", "launch timed out")


def _sticky(message):
    return any(s in message for s in _STICKY_CUDA_ERRORS)


def bench_row(calls, tensors, extra, grad, backward, device, dtype, min_run_time, label, errors=None):
    """Time every contender in `calls` on one op/size/pass.

    Returns ({contender: median us}, compile seconds or None, status): status "ok", "MISMATCH" (a
    contender's result differs from eager's) or "ERROR" (a contender raised; it gets no median).
    Each problem is printed and, when `errors` is a list, appended to it as a line.
    """
    errors = [] if errors is None else errors

    def problem(text):
        errors.append(text)
        print(f"  {'error' if 'raised' in text else 'warning'}: {label}: {text}", file=sys.stderr)

    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-12)
    medians, compile_s, status = {}, None, "ok"
    try:
        expected = make_callable(calls["eager"], tensors, extra, grad, backward)()
    except Exception as e:  # the reference itself failed (say, out of memory): time the rest unchecked
        expected, status = None, "ERROR"
        problem(f"eager (the check's reference) raised {_one_line(e)}")
    for name, call in calls.items():
        try:
            fn = make_callable(call, tensors, extra, grad, backward)
            t0 = time.perf_counter()
            result = fn()  # the first call: for "compiled", the compilation
            _sync(device)
            if name == "compiled":
                compile_s = time.perf_counter() - t0
            if expected is not None and not _close(result, expected, **tol):
                status = "MISMATCH" if status == "ok" else status
                problem(f"{name} does not match eager")
            del result
            medians[name] = harness.time_us(fn, device, min_run_time=min_run_time)
        except Exception as e:  # one contender failing (say, compile without a compiler) is a cell, not the run
            status = "ERROR"
            problem(f"{name} raised {_one_line(e)}")
            if device.type == "cuda" and not _sticky(str(e)):
                torch.cuda.empty_cache()
    return medians, compile_s, status


# ---------------------------------------------------------------------------------------------------
# Targets, table, summary


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _fmt_us(x):
    return "-" if x is None else f"{x:,.1f}"


def _fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def _fmt_gbps(x):
    return "-" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def target_criterion(target):
    """The words of one target, e.g. 'fwd+bwd at paper >= 10x eager, >= 3x compiled'."""
    parts = [f">= {target[c]:g}x {c}" for c in ("eager", "compiled") if c in target]
    if "bandwidth" in target:
        parts.append(f">= {target['bandwidth']:g} of copy bandwidth")
    return f"{'/'.join(target['passes'])} at {target['size']} " + ", ".join(parts)


def check_target(device_type, size_name, pass_, backend, medians, fraction):
    """The target that applies to this row for `backend`, checked: None if none applies, else
    (criterion, met, text) with met True, False, or None where a timing it needs is missing."""
    for target in TARGETS["cuda" if device_type == "cuda" else "cpu"]:
        if size_name != target["size"] or pass_ not in target["passes"]:
            continue
        verdicts, notes = [], []
        for contender in ("eager", "compiled"):
            if contender in target:
                speedup = _ratio(medians.get(contender), medians.get(backend))
                verdicts.append(None if speedup is None else speedup >= target[contender])
                note = (f"no {contender if backend in medians else backend} timing" if speedup is None
                        else f"{speedup:.1f}x {contender}")
                if note not in notes:
                    notes.append(note)
        if "bandwidth" in target:
            verdicts.append(None if fraction is None else fraction >= target["bandwidth"])
            notes.append("no bandwidth" if fraction is None else f"{fraction:.2f} of copy")
        met = False if False in verdicts else None if None in verdicts else True
        word = {True: "yes", False: "NO", None: "?"}[met]
        return target_criterion(target), met, f"{word} ({', '.join(notes)})"
    return None


def table_of(rows, contenders, backends, bandwidth):
    """(header, rows, right-aligned column indices) of the printed table."""
    single = len(backends) == 1
    header = ["op", "size", "pass"] + [f"{c} us" for c in contenders]
    for b in backends:
        header += [f"eager/{b}", f"compiled/{b}"]
    if bandwidth:
        header.append("MB")
        for b in backends:
            header += [f"GB/s {b}", f"of copy {b}"]
    right = set(range(3, len(header)))
    header.append("check")
    criteria = {r["targets"][b]["criterion"] for r in rows for b in backends if b in r.get("targets", {})}
    if single and len(criteria) == 1:
        header.append(f"target: {criteria.pop()}")
    else:
        header += [f"target {b}" for b in backends]
    table = []
    for r in rows:
        m = r["medians_us"]
        line = [r["op"], r["size"], r["pass"]] + [_fmt_us(m.get(c)) for c in contenders]
        for b in backends:
            line += [_fmt_ratio(_ratio(m.get("eager"), m.get(b))), _fmt_ratio(_ratio(m.get("compiled"), m.get(b)))]
        if bandwidth:
            mb = r["bytes"] / 1e6
            line.append(f"{mb:,.1f}" if mb >= 1 else f"{mb:.2g}")
            for b in backends:
                gbps, frac = r["gbps"].get(b), r["bandwidth_fraction"].get(b)
                line += [_fmt_gbps(gbps), "-" if frac is None else f"{frac:.2f}"]
        line.append(r["status"])
        line += [r["targets"][b]["text"] if b in r.get("targets", {}) else "" for b in backends]
        table.append(line)
    return header, table, right


def summary_of(rows, backends, device_type, copy):
    """Lines: per target and backend, how many rows meet it and which do not; the skipped rows."""
    lines = []
    if copy is not None and copy.get("gbps"):
        lines.append(f"copy bandwidth: {_fmt_gbps(copy['gbps'])} GB/s ({copy['tensor_bytes'] / 2**20:,.0f} MiB copy_, "
                     f"read + written, median {copy['median_us']:,.1f} us)")
    for target in TARGETS["cuda" if device_type == "cuda" else "cpu"]:
        criterion = target_criterion(target)
        for b in backends:
            checked = [r for r in rows if b in r.get("targets", {}) and r["targets"][b]["criterion"] == criterion]
            if not checked:
                continue
            met = [r for r in checked if r["targets"][b]["met"] is True]
            missed = [f"{r['op']} {r['pass']} {r['targets'][b]['text']}" for r in checked
                      if r["targets"][b]["met"] is not True]
            small = sorted({r["op"] for r in checked if r["bytes"] < 64e6})
            lines.append(f"target {b}: {criterion}: met by {len(met)} of {len(checked)}"
                         + (f"; not met: {'; '.join(missed)}" if missed else "")
                         + (f" ({', '.join(small)} move{'s' * (len(small) == 1)} under 64 MB a call at this size: "
                            "launch latency, not bandwidth, bounds them)" if "bandwidth" in target and small else ""))
    skipped = [r for r in rows if r["status"] == "SKIPPED"]
    if skipped:
        lines.append(f"{len(skipped)} row(s) not run: {skipped[0].get('skipped') or ''}")
    return lines


# ---------------------------------------------------------------------------------------------------
# Command line


def parse_size(text):
    """A size name (resolved for the device later: see sizes_for) or B,H,N,W,S: (name, dims or None)."""
    if text in SIZES or text in GPU_SIZES:
        return text, None
    try:
        values = [int(v) for v in text.split(",")]
        if len(values) != 5:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: a name ({', '.join(SIZES)}) or B,H,N,W,S")
    return text, dict(zip("BHNWS", values))


def _size_help(sizes):
    return ", ".join(f"{k} ({','.join(str(v) for v in d.values())})" for k, d in sizes.items())


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short timings (0.1 s per measurement) and torch.compile at paper size only")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--ops", nargs="+", default=DEFAULT_OPS, metavar="OP",
                   help=f"ops to time (default: {' '.join(DEFAULT_OPS)}; also: "
                        f"{' '.join(k for k in OPS if k not in DEFAULT_OPS)}; 'all')")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=None, metavar="SIZE",
                   help=f"a name or B,H,N,W,S (default: paper large). CPU: {_size_help(SIZES)}; "
                        f"CUDA: {_size_help(GPU_SIZES)}")
    p.add_argument("--passes", nargs="+", choices=PASSES, default=PASSES)
    p.add_argument("--backends", nargs="+", metavar="NAME",
                   help="memops backends to time (default: every non-reference one for the device, "
                        "but never the Triton interpreter on a CPU)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile(reference)")
    p.add_argument("--compile-sizes", nargs="+", metavar="SIZE",
                   help="sizes to run torch.compile at (default: all; --quick: paper)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds per measurement (default 1.0; --quick 0.1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bandwidth", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the copy bandwidth and give each timing its GB/s and fraction of it "
                        "(default: on for CUDA, off for CPU)")
    p.add_argument("--copy-mib", type=int, default=None,
                   help="size of the copy_ that measures the bandwidth, MiB (default 1024 on CUDA, 256 on CPU)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop starting rows after this many seconds (the rest are recorded as skipped), "
                        "and skip torch.compile where the rows left would not fit (default: no limit)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write everything (environment, rows, table, summary, errors) as JSON, "
                        "rewritten after each row so a killed run leaves what it did")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", default=None, metavar="PATH",
                     help=f"CSV to append to (default {os.path.relpath(DEFAULT_CSV)}, on CUDA "
                          f"{os.path.relpath(DEFAULT_GPU_CSV)})")
    out.add_argument("--no-csv", dest="csv", action="store_const", const="", help="write no CSV")
    return p


def _write_json(path, doc):
    """Write doc to path atomically (a reader never sees half a file); a failure is a warning."""
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".part"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        os.replace(tmp, path)
    except Exception as e:
        print(f"bench_ops: warning: could not write {path}: {_one_line(e)}", file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench_ops: device {args.device!r} asked for, but CUDA is not available", file=sys.stderr)
        return 2
    if device.type not in ("cpu", "cuda"):
        print(f"bench_ops: device {args.device!r}: only cpu and cuda are timed", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    ops = list(OPS) if args.ops == ["all"] else args.ops
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        print(f"bench_ops: unknown op(s) {unknown}; choose from {list(OPS)} or 'all'", file=sys.stderr)
        return 2
    named = sizes_for(device.type)
    sizes = [(name, dims or named[name]) for name, dims in (args.sizes or [("paper", None), ("large", None)])]
    try:
        available = [b for b in memops.available_backends(device) if b != "reference"]
    except Exception as e:
        print(f"bench_ops: memops.available_backends({device.type!r}) raised {_one_line(e)}", file=sys.stderr)
        return 2
    # the Triton interpreter (TRITON_INTERPRET=1) runs on CPU tensors, far too slowly to time: only on request
    default_backends = [b for b in available if not (device.type == "cpu" and b == "triton")]
    backends = args.backends or default_backends
    missing = [b for b in backends if b not in available]
    if missing or not backends:
        what = f"backend(s) {', '.join(missing)} not available" if missing else "no memops backend but the reference runs"
        print(f"bench_ops: {what} on {device.type} in this build (available: {', '.join(available) or 'none'}; "
              f"build: {memops.build_info()})", file=sys.stderr)
        return 2
    min_run_time = args.min_run_time or (0.1 if args.quick else 1.0)
    compile_sizes = set(args.compile_sizes or (["paper"] if args.quick else [name for name, _ in sizes]))
    bandwidth = device.type == "cuda" if args.bandwidth is None else args.bandwidth
    copy_mib = args.copy_mib or (1024 if device.type == "cuda" else 256)
    dtype = getattr(torch, args.dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    gpu_csv = device.type == "cuda"
    csv_path = (DEFAULT_GPU_CSV if gpu_csv else DEFAULT_CSV) if args.csv is None else args.csv
    csv_fields = GPU_CSV_FIELDS if gpu_csv else CSV_FIELDS
    if hasattr(torch._dynamo.config, "recompile_limit"):  # one entry per op × size × pass × variant
        torch._dynamo.config.recompile_limit = 64
    else:
        torch._dynamo.config.cache_size_limit = 64

    env = harness.Env(device)
    print(env.describe())
    if env.busy_warning():
        print(env.busy_warning())
    build = memops.build_info()
    print(f"memops build {build}")
    print(f"dtype {args.dtype}; {min_run_time:g} s per measurement (median); "
          f"torch.compile: {'off' if not args.compile else ', '.join(sorted(compile_sizes))} "
          "(compile time excluded from timings)")
    print("sizes: " + "; ".join(f"{name} ({', '.join(f'{k}={v}' for k, v in d.items())})" for name, d in sizes))
    print(f"backends: {', '.join(backends)}" + (f" (available, not timed: {', '.join(sorted(set(available) - set(backends)))})"
                                               if set(available) - set(backends) else ""))

    start = time.perf_counter()
    deadline = None if args.time_budget is None else start + args.time_budget
    contenders = backends + ["eager"] + (["compiled"] if args.compile else [])
    doc = {
        "version": 1, "complete": False, "argv": sys.argv[1:] if argv is None else list(argv),
        "env": {**env.columns(), "describe": env.describe()}, "device": str(device), "device_type": device.type,
        "build": build, "dtype": args.dtype, "min_run_time": min_run_time, "backends": backends,
        "contenders": contenders, "sizes": {name: dims for name, dims in sizes}, "bandwidth": bandwidth,
        "targets": [target_criterion(t) for t in TARGETS["cuda" if device.type == "cuda" else "cpu"]],
        "copy": None, "rows": [], "table": None, "summary": [], "errors": [], "elapsed_s": None, "csv": csv_path or None,
    }

    copy = None
    if bandwidth:
        try:
            copy = copy_bandwidth(device, copy_mib * 2**20, min_run_time)
            print(f"copy bandwidth: {copy['gbps']:,.1f} GB/s ({copy_mib} MiB copy_, median {copy['median_us']:,.1f} us)")
        except Exception as e:
            doc["errors"].append(f"copy bandwidth: {_one_line(e)}")
            print(f"bench_ops: error: measuring the copy bandwidth raised {_one_line(e)}", file=sys.stderr)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        doc["copy"] = copy
    print(flush=True)

    # Paper size first, then large: under --time-budget, what is cut is the large size's tail.
    work = [(si, s, oi, o, pi, p) for si, s in enumerate(sizes) for oi, o in enumerate(ops)
            for pi, p in enumerate(args.passes)]
    compiled_fns, records, csv_rows = {}, [], []
    compile_total, plain_times, compile_times = 0.0, [], []
    all_ok, fatal = True, None

    def finish_doc():
        ordered = sorted(records, key=lambda r: r["_order"])
        doc["rows"] = [{k: v for k, v in r.items() if k != "_order"} for r in ordered]
        header, table, _ = table_of(doc["rows"], contenders, backends, bandwidth)
        doc["table"] = {"header": header, "rows": table}
        doc["summary"] = summary_of(doc["rows"], backends, device.type, copy)
        doc["elapsed_s"] = round(time.perf_counter() - start, 2)
        doc["compile_s_total"] = round(compile_total, 2)

    inputs_for = {}
    for index, (si, (size_name, dims), oi, op_name, pi, pass_) in enumerate(work):
        op = OPS[op_name]
        shape = ",".join(f"{k}={v}" for k, v in dims.items())
        record = {"_order": (oi, si, pi), "op": op_name, "size": size_name, "shape": shape, "dims": dims,
                  "dtype": args.dtype, "pass": pass_, "status": "SKIPPED", "skipped": None, "errors": [], "notes": [],
                  "medians_us": {}, "compile_s": None, "bytes": traffic_bytes(op_name, dims, pass_, itemsize),
                  "gbps": {}, "bandwidth_fraction": {}, "targets": {}}
        records.append(record)
        now = time.perf_counter()
        if fatal is not None:
            record["skipped"] = f"the CUDA context is unusable after: {fatal}"
        elif deadline is not None and now >= deadline:
            record["skipped"] = f"the time budget ({args.time_budget:g} s) ran out"
        if record["skipped"]:
            finish_doc()
            _write_json(args.json, doc)
            continue
        label = f"{op_name} {size_name} {pass_}"
        row_start = now
        try:
            key = (size_name, op_name)
            if key not in inputs_for:
                inputs_for.clear()  # one op's inputs alive at a time (the large ones are 256 MiB)
                inputs_for[key] = make_inputs(op, dims, dtype, device, args.seed)
            tensors, extra, grad = inputs_for[key]
            calls = {b: op.backend_call(b) for b in backends}
            calls["eager"] = op.reference_call()
            want_compile = args.compile and size_name in compile_sizes
            if want_compile and deadline is not None:
                rows_left = len(work) - index
                plain = sum(plain_times) / len(plain_times) if plain_times else 3.0
                compile_cost = sum(compile_times) / len(compile_times) if compile_times else 20.0
                if deadline - now - rows_left * plain < compile_cost:
                    want_compile = False
                    record["notes"].append("torch.compile skipped to stay within the time budget")
                    print(f"  note: {label}: torch.compile skipped to stay within the time budget", file=sys.stderr)
            if want_compile:
                if op_name not in compiled_fns:
                    compiled_fns[op_name] = torch.compile(getattr(reference, op.op), dynamic=False)
                calls["compiled"] = op.reference_call(compiled_fns[op_name])
            medians, compile_s, status = bench_row(calls, tensors, extra, grad, pass_ == "fwd+bwd", device, dtype,
                                                   min_run_time, label=label, errors=record["errors"])
        except Exception as e:  # making the inputs, say: the row fails, the run goes on
            medians, compile_s, status = {}, None, "ERROR"
            record["errors"].append(f"row raised {_one_line(e)}")
            print(f"  error: {label}: raised {_one_line(e)}", file=sys.stderr)
            inputs_for.clear()
        if device.type == "cuda":
            sticky = [line for line in record["errors"] if _sticky(line)]
            if sticky:
                fatal = f"{label}: {sticky[0]}"
        elapsed_row = time.perf_counter() - row_start
        if compile_s is not None:
            compile_times.append(compile_s)
            compile_total += compile_s
        plain_times.append(max(0.0, elapsed_row - (compile_s or 0.0)))
        all_ok &= status == "ok"
        copy_gbps = copy["gbps"] if copy else None
        record.update(status=status, medians_us={c: medians[c] for c in contenders if c in medians},
                      compile_s=None if compile_s is None else round(compile_s, 3))
        for name, us in record["medians_us"].items():
            record["gbps"][name] = record["bytes"] / us / 1e3
            record["bandwidth_fraction"][name] = None if not copy_gbps else record["gbps"][name] / copy_gbps
        for b in backends:
            checked = check_target(device.type, size_name, pass_, b, medians,
                                   record["bandwidth_fraction"].get(b) if bandwidth else None)
            if checked is not None:
                criterion, met, text = checked
                record["targets"][b] = {"criterion": criterion, "met": met, "text": text}
        eager, compiled = medians.get("eager"), medians.get("compiled")
        for name in contenders:
            if medians.get(name) is None:
                continue
            speedup_eager, speedup_compiled = _ratio(eager, medians[name]), _ratio(compiled, medians[name])
            row = {
                **env.columns(), "op": op_name, "size": size_name, "shape": shape, "dtype": args.dtype,
                "pass": pass_, "backend": name, "median_us": f"{medians[name]:.3f}",
                "speedup_vs_eager": "" if speedup_eager is None else f"{speedup_eager:.4f}",
                "speedup_vs_compiled": "" if speedup_compiled is None else f"{speedup_compiled:.4f}",
                "compile_s": f"{compile_s:.2f}" if name == "compiled" and compile_s is not None else "",
            }
            if gpu_csv:
                fraction = record["bandwidth_fraction"].get(name)
                row.update(bytes=record["bytes"], gbps=f"{record['gbps'][name]:.2f}",
                           copy_gbps="" if copy_gbps is None else f"{copy_gbps:.2f}",
                           bandwidth_fraction="" if fraction is None else f"{fraction:.4f}")
            csv_rows.append(row)
        print(f"  {label}: " + ", ".join(f"{c} {_fmt_us(medians[c])} us" for c in contenders if medians.get(c) is not None)
              + (f" (compile {compile_s:.1f} s)" if compile_s is not None else ""), flush=True)
        finish_doc()
        _write_json(args.json, doc)
    inputs_for.clear()
    elapsed = time.perf_counter() - start

    finish_doc()
    header, table, right = table_of(doc["rows"], contenders, backends, bandwidth)
    print()
    print(harness.format_table(header, table, right=right))
    print()
    for line in doc["summary"]:
        print(line)
    print(f"total {elapsed:.1f} s, of which torch.compile {compile_total:.1f} s")
    if csv_path and csv_rows:
        try:
            harness.append_csv(csv_path, [{k: r.get(k, "") for k in csv_fields} for r in csv_rows], csv_fields)
            print(f"appended {len(csv_rows)} rows to {os.path.relpath(csv_path)}")
        except Exception as e:
            doc["errors"].append(f"csv: {_one_line(e)}")
            print(f"bench_ops: error: could not append to {csv_path}: {_one_line(e)}", file=sys.stderr)
            all_ok = False
    all_ok &= not doc["errors"]
    doc["complete"] = True
    doc["exit_code"] = 0 if all_ok else 1
    _write_json(args.json, doc)
    return doc["exit_code"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    sys.exit(main())
