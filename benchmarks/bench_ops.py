"""Time each memops op, forward and forward+backward: the compiled backends (cpp; triton on CUDA)
against the eager reference and torch.compile of it, checked against eager; a table, CSV rows,
optionally a JSON document. What is timed, how, and the columns: benchmarks/README.md.

    python benchmarks/bench_ops.py                  # every op, paper and large size, CSV row per timing
    python benchmarks/bench_ops.py --quick          # short timings, torch.compile at paper size only
    python benchmarks/bench_ops.py --ops ntm_address read --sizes paper --no-compile --no-csv
    python benchmarks/bench_ops.py --device cuda    # cpp (the CUDA kernels) and triton columns, GB/s

Parts: _ops_sizes.py (ops, sizes, targets, byte model), _ops_run.py (inputs, checks, timing),
_ops_report.py (table, summary, CSV, JSON).
"""

import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:
    import memops
except ImportError:  # not installed (pip install -e .): the checkout this script is in
    sys.path.insert(1, os.path.dirname(HERE))
    import memops

import harness  # noqa: E402
from _ops_report import CSV_FIELDS, GPU_CSV_FIELDS, csv_rows, fill_doc, table_of, write_json  # noqa: E402
from _ops_run import copy_bandwidth, one_line, run_rows  # noqa: E402
from _ops_sizes import DEFAULT_OPS, GPU_SIZES, OPS, PASSES, SIZES, sizes_for, target_criterion, targets_for  # noqa: E402

DEFAULT_CSV = os.path.join(HERE, "results", "ops.csv")
DEFAULT_GPU_CSV = os.path.join(HERE, "results", "ops_gpu.csv")


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


def fail(message):
    print(f"bench_ops: {message}", file=sys.stderr)
    return 2


def make_plan(args):
    """The run the arguments ask for (device, ops, sizes, backends, contenders, timing settings), or
    the message of why it cannot run."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return None, f"device {args.device!r} asked for, but CUDA is not available"
    if device.type not in ("cpu", "cuda"):
        return None, f"device {args.device!r}: only cpu and cuda are timed"
    ops = list(OPS) if args.ops == ["all"] else args.ops
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        return None, f"unknown op(s) {unknown}; choose from {list(OPS)} or 'all'"
    named = sizes_for(device.type)
    sizes = [(name, dims or named[name]) for name, dims in (args.sizes or [("paper", None), ("large", None)])]
    try:
        available = [b for b in memops.available_backends(device) if b != "reference"]
    except Exception as e:
        return None, f"memops.available_backends({device.type!r}) raised {one_line(e)}"
    # the Triton interpreter (TRITON_INTERPRET=1) runs on CPU tensors, far too slowly to time: only on request
    default_backends = [b for b in available if not (device.type == "cpu" and b == "triton")]
    backends = args.backends or default_backends
    missing = [b for b in backends if b not in available]
    if missing or not backends:
        what = f"backend(s) {', '.join(missing)} not available" if missing else "no memops backend but the reference runs"
        return None, (f"{what} on {device.type} in this build (available: {', '.join(available) or 'none'}; "
                      f"build: {memops.build_info()})")
    dtype = getattr(torch, args.dtype)
    plan = argparse.Namespace(
        device=device, ops=ops, sizes=sizes, passes=args.passes, backends=backends, available=available,
        contenders=backends + ["eager"] + (["compiled"] if args.compile else []),
        dtype=dtype, dtype_name=args.dtype, itemsize=torch.empty((), dtype=dtype).element_size(),
        min_run_time=args.min_run_time or (0.1 if args.quick else 1.0), seed=args.seed,
        compile=args.compile,
        compile_sizes=set(args.compile_sizes or (["paper"] if args.quick else [name for name, _ in sizes])),
        bandwidth=device.type == "cuda" if args.bandwidth is None else args.bandwidth,
        copy_mib=args.copy_mib or (1024 if device.type == "cuda" else 256),
        time_budget=args.time_budget, gpu_csv=device.type == "cuda")
    plan.csv = (DEFAULT_GPU_CSV if plan.gpu_csv else DEFAULT_CSV) if args.csv is None else args.csv
    return plan, None


def print_header(plan, env, build):
    print(env.describe())
    if env.busy_warning():
        print(env.busy_warning())
    print(f"memops build {build}")
    print(f"dtype {plan.dtype_name}; {plan.min_run_time:g} s per measurement (median); "
          f"torch.compile: {'off' if not plan.compile else ', '.join(sorted(plan.compile_sizes))} "
          "(compile time excluded from timings)")
    print("sizes: " + "; ".join(f"{name} ({', '.join(f'{k}={v}' for k, v in d.items())})" for name, d in plan.sizes))
    idle = sorted(set(plan.available) - set(plan.backends))
    print(f"backends: {', '.join(plan.backends)}" + (f" (available, not timed: {', '.join(idle)})" if idle else ""))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan, why = make_plan(args)
    if plan is None:
        return fail(why)
    if hasattr(torch._dynamo.config, "recompile_limit"):  # one entry per op × size × pass × variant
        torch._dynamo.config.recompile_limit = 64
    else:
        torch._dynamo.config.cache_size_limit = 64

    env = harness.Env(plan.device)
    build = memops.build_info()
    print_header(plan, env, build)
    start = time.perf_counter()
    doc = {
        "version": 1, "complete": False, "argv": sys.argv[1:] if argv is None else list(argv),
        "env": {**env.columns(), "describe": env.describe()}, "device": str(plan.device),
        "device_type": plan.device.type, "build": build, "dtype": plan.dtype_name, "min_run_time": plan.min_run_time,
        "backends": plan.backends, "contenders": plan.contenders, "sizes": {name: dims for name, dims in plan.sizes},
        "bandwidth": plan.bandwidth, "targets": [target_criterion(t) for t in targets_for(plan.device.type)],
        "copy": None, "rows": [], "table": None, "summary": [], "errors": [], "elapsed_s": None, "csv": plan.csv or None,
    }

    copy = None
    if plan.bandwidth:
        try:
            copy = copy_bandwidth(plan.device, plan.copy_mib * 2**20, plan.min_run_time)
            print(f"copy bandwidth: {copy['gbps']:,.1f} GB/s ({plan.copy_mib} MiB copy_, median {copy['median_us']:,.1f} us)")
        except Exception as e:
            doc["errors"].append(f"copy bandwidth: {one_line(e)}")
            print(f"bench_ops: error: measuring the copy bandwidth raised {one_line(e)}", file=sys.stderr)
            if plan.device.type == "cuda":
                torch.cuda.empty_cache()
        doc["copy"] = copy
    print(flush=True)

    def on_row(records, compile_total):
        fill_doc(doc, records, plan, copy, time.perf_counter() - start, compile_total)
        write_json(args.json, doc)

    records, compile_total = run_rows(plan, copy, on_row)
    elapsed = time.perf_counter() - start
    fill_doc(doc, records, plan, copy, elapsed, compile_total)
    header, table, right = table_of(doc["rows"], plan.contenders, plan.backends, plan.bandwidth)
    print()
    print(harness.format_table(header, table, right=right))
    print()
    for line in doc["summary"]:
        print(line)
    print(f"total {elapsed:.1f} s, of which torch.compile {compile_total:.1f} s")
    all_ok = all(r["status"] == "ok" for r in records if not r["skipped"])
    rows = csv_rows(records, env.columns(), plan.contenders, plan.gpu_csv, copy)
    if plan.csv and rows:
        fields = GPU_CSV_FIELDS if plan.gpu_csv else CSV_FIELDS
        try:
            harness.append_csv(plan.csv, [{k: r.get(k, "") for k in fields} for r in rows], fields)
            print(f"appended {len(rows)} rows to {os.path.relpath(plan.csv)}")
        except Exception as e:
            doc["errors"].append(f"csv: {one_line(e)}")
            print(f"bench_ops: error: could not append to {plan.csv}: {one_line(e)}", file=sys.stderr)
            all_ok = False
    all_ok &= not doc["errors"]
    doc["complete"] = True
    doc["exit_code"] = 0 if all_ok else 1
    write_json(args.json, doc)
    return doc["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
