"""Time each memops op, forward and forward+backward: the compiled backends against the reference.

    python benchmarks/bench_ops.py                  # every op, paper and large size, CSV row per timing
    python benchmarks/bench_ops.py --quick          # short timings, torch.compile at paper size only
    python benchmarks/bench_ops.py --ops ntm_address read --sizes paper --no-compile --no-csv

For every op × size × pass (fwd: the op on inputs that need no gradient; fwd+bwd: the op, then
torch.autograd.grad of its output with a fixed random output gradient with respect to every floating
input) it times
  cpp       memops.<op>(..., backend="cpp") (and any other non-reference backend the build has for
            the device: each gets a column),
  eager     memops.reference.<op>, the plain-PyTorch specification, as a model would run it,
  compiled  torch.compile(memops.reference.<op>, dynamic=False) (inductor); compiled and run once per
            size and pass before timing, so compile time is excluded (it is printed, and stored in
            the compile_s column),
checks that each contender's output (and gradients) match eager's, prints a table and appends one
CSV row per timing to benchmarks/results/ops.csv. See benchmarks/README.md for the columns.

Target (the issue's): forward+backward at paper size at least 3x faster than eager; each row says
whether it is met; nothing fails on it.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import memops  # noqa: E402
from memops import reference  # noqa: E402
from memops.testing import random_inputs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CSV = os.path.join(HERE, "results", "ops.csv")

SIZES = {
    "paper": dict(B=64, H=1, N=128, W=20, S=3),  # NTM paper: 128 slots of width 20, one head
    "large": dict(B=16, H=1, N=4096, W=64, S=3),
}
TARGET = dict(size="paper", pass_="fwd+bwd", speedup=3.0)


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

CSV_FIELDS = harness.ENV_FIELDS + [
    "op", "size", "shape", "dtype", "pass", "backend", "median_us",
    "speedup_vs_eager", "speedup_vs_compiled", "compile_s",
]


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
    return all(
        x.shape == y.shape and bool(((x.double() - y.double()).abs().max() <= atol + rtol * y.double().abs().max()))
        for x, y in zip(a, b)
    )


def parse_size(text):
    if text in SIZES:
        return text, SIZES[text]
    try:
        values = [int(v) for v in text.split(",")]
        if len(values) != 5:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: a name ({', '.join(SIZES)}) or B,H,N,W,S")
    return text, dict(zip("BHNWS", values))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short timings (0.1 s per measurement) and torch.compile at paper size only")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--ops", nargs="+", default=DEFAULT_OPS, metavar="OP",
                   help=f"ops to time (default: {' '.join(DEFAULT_OPS)}; also: "
                        f"{' '.join(k for k in OPS if k not in DEFAULT_OPS)}; 'all')")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=None, metavar="SIZE",
                   help="paper (B=64,H=1,N=128,W=20,S=3), large (B=16,H=1,N=4096,W=64,S=3), or B,H,N,W,S "
                        "(default: paper large)")
    p.add_argument("--passes", nargs="+", choices=["fwd", "fwd+bwd"], default=["fwd", "fwd+bwd"])
    p.add_argument("--backends", nargs="+", metavar="NAME",
                   help="memops backends to time (default: every non-reference one for the device)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile(reference)")
    p.add_argument("--compile-sizes", nargs="+", metavar="SIZE",
                   help="sizes to run torch.compile at (default: all; --quick: paper)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds per measurement (default 1.0; --quick 0.1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", default=DEFAULT_CSV, metavar="PATH", help=f"CSV to append to (default {DEFAULT_CSV})")
    out.add_argument("--no-csv", dest="csv", action="store_const", const=None, help="write no CSV")
    return p


def bench_row(calls, tensors, extra, grad, backward, device, dtype, min_run_time, label):
    """Time every contender in `calls` on one op/size/pass.

    Returns ({contender: median us}, compile seconds or None, status): status "ok", "MISMATCH" (a
    contender's result differs from eager's) or "ERROR" (a contender raised; it gets no median).
    """
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-12)
    expected = make_callable(calls["eager"], tensors, extra, grad, backward)()
    medians, compile_s, status = {}, None, "ok"
    for name, call in calls.items():
        fn = make_callable(call, tensors, extra, grad, backward)
        try:
            t0 = time.perf_counter()
            result = fn()  # the first call: for "compiled", the compilation
            _sync(device)
            if name == "compiled":
                compile_s = time.perf_counter() - t0
            if not _close(result, expected, **tol):
                status = "MISMATCH" if status == "ok" else status
                print(f"  warning: {label}: {name} does not match eager", file=sys.stderr)
            medians[name] = harness.time_us(fn, device, min_run_time=min_run_time)
        except Exception as e:  # one contender failing (say, compile without a compiler) is a cell, not the run
            status = "ERROR"
            print(f"  error: {label}: {name} raised {type(e).__name__}: {' '.join(str(e).split())[:300]}",
                  file=sys.stderr)
    return medians, compile_s, status


def _ratio(a, b):
    return None if a is None or b is None else a / b


def _fmt_us(x):
    return "-" if x is None else f"{x:,.1f}"


def _fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench_ops: device {args.device!r} asked for, but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    ops = list(OPS) if args.ops == ["all"] else args.ops
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        print(f"bench_ops: unknown op(s) {unknown}; choose from {list(OPS)} or 'all'", file=sys.stderr)
        return 2
    sizes = args.sizes or [parse_size(s) for s in ("paper", "large")]
    available = [b for b in memops.available_backends(device) if b != "reference"]
    backends = args.backends or available
    missing = [b for b in backends if b not in available]
    if missing or not backends:
        what = f"backend(s) {', '.join(missing)} not available" if missing else "no memops backend but the reference runs"
        print(f"bench_ops: {what} on {device.type} in this build (available: {', '.join(available) or 'none'}; "
              f"build: {memops.build_info()})", file=sys.stderr)
        return 2
    min_run_time = args.min_run_time or (0.1 if args.quick else 1.0)
    compile_sizes = set(args.compile_sizes or (["paper"] if args.quick else [name for name, _ in sizes]))
    dtype = getattr(torch, args.dtype)
    if hasattr(torch._dynamo.config, "recompile_limit"):  # one entry per op × size × pass × variant
        torch._dynamo.config.recompile_limit = 64
    else:
        torch._dynamo.config.cache_size_limit = 64

    env = harness.Env(device)
    print(env.describe())
    if env.busy_warning():
        print(env.busy_warning())
    print(f"memops build {memops.build_info()}")
    print(f"dtype {args.dtype}; {min_run_time:g} s per measurement (median); "
          f"torch.compile: {'off' if not args.compile else ', '.join(sorted(compile_sizes))} "
          "(compile time excluded from timings)")
    print("sizes: " + "; ".join(f"{name} ({', '.join(f'{k}={v}' for k, v in d.items())})" for name, d in sizes))
    print()

    contenders = backends + ["eager"] + (["compiled"] if args.compile else [])
    start = time.perf_counter()
    compile_total = 0.0
    table, csv_rows, all_ok = [], [], True
    for op_name in ops:
        op = OPS[op_name]
        compiled_fn = torch.compile(getattr(reference, op.op), dynamic=False) if args.compile else None
        for size_name, dims in sizes:
            tensors, extra, grad = make_inputs(op, dims, dtype, device, args.seed)
            for pass_ in args.passes:
                calls = {b: op.backend_call(b) for b in backends}
                calls["eager"] = op.reference_call()
                if compiled_fn is not None and size_name in compile_sizes:
                    calls["compiled"] = op.reference_call(compiled_fn)
                medians, compile_s, status = bench_row(
                    calls, tensors, extra, grad, pass_ == "fwd+bwd", device, dtype, min_run_time,
                    label=f"{op_name} {size_name} {pass_}",
                )
                all_ok &= status == "ok"
                compile_total += compile_s or 0.0
                eager, compiled = medians.get("eager"), medians.get("compiled")
                row = [op_name, size_name, pass_] + [_fmt_us(medians.get(c)) for c in contenders]
                for b in backends:
                    row += [_fmt_ratio(_ratio(eager, medians.get(b))), _fmt_ratio(_ratio(compiled, medians.get(b)))]
                row.append(status)
                target = ""
                if size_name == TARGET["size"] and pass_ == TARGET["pass_"]:
                    speedup = _ratio(eager, medians.get(backends[0]))
                    target = "-" if speedup is None else "yes" if speedup >= TARGET["speedup"] else "NO"
                row.append(target)
                table.append(row)
                shape = ",".join(f"{k}={v}" for k, v in dims.items())
                for name in contenders:
                    if medians.get(name) is None:
                        continue
                    speedup_eager, speedup_compiled = _ratio(eager, medians[name]), _ratio(compiled, medians[name])
                    csv_rows.append({
                        **env.columns(), "op": op_name, "size": size_name, "shape": shape, "dtype": args.dtype,
                        "pass": pass_, "backend": name, "median_us": f"{medians[name]:.3f}",
                        "speedup_vs_eager": "" if speedup_eager is None else f"{speedup_eager:.4f}",
                        "speedup_vs_compiled": "" if speedup_compiled is None else f"{speedup_compiled:.4f}",
                        "compile_s": f"{compile_s:.2f}" if name == "compiled" and compile_s is not None else "",
                    })
                print(f"  {op_name} {size_name} {pass_}: " + ", ".join(
                    f"{c} {_fmt_us(medians[c])} us" for c in contenders if medians.get(c) is not None)
                    + (f" (compile {compile_s:.1f} s)" if compile_s is not None else ""), flush=True)
    elapsed = time.perf_counter() - start

    header = ["op", "size", "pass"] + [f"{c} us" for c in contenders]
    for b in backends:
        header += [f"eager/{b}", f"compiled/{b}"]
    header += ["check", f"target: {TARGET['pass_']} {TARGET['size']} >= {TARGET['speedup']:g}x eager"]
    print()
    print(harness.format_table(header, table, right=set(range(3, 3 + len(contenders) + 2 * len(backends)))))
    print()
    target_rows = [r for r in table if r[-1]]
    met = sum(r[-1] == "yes" for r in target_rows)
    if target_rows:
        print(f"target ({backends[0]} {TARGET['pass_']} at {TARGET['size']} size >= {TARGET['speedup']:g}x "
              f"faster than eager): met by {met} of {len(target_rows)} ops")
    print(f"total {elapsed:.1f} s, of which torch.compile {compile_total:.1f} s")
    if args.csv and csv_rows:
        harness.append_csv(args.csv, csv_rows, CSV_FIELDS)
        print(f"appended {len(csv_rows)} rows to {os.path.relpath(args.csv)}")
    return 0 if all_ok else 1


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    sys.exit(main())
