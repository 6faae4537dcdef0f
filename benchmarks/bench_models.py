"""Time the models end to end, a training step (forward + backward) and the forward alone, for each
backend of the memops ops, at the settings `memops train` uses: the NTM on copy, the NSE and its LSTM
baseline on nse-recall. Rows go to benchmarks/results/models.csv; details: benchmarks/README.md.

    python benchmarks/bench_models.py --threads 1
    python benchmarks/bench_models.py --models ntm --batch 1 16 64 --compile --no-csv
    python benchmarks/bench_models.py --models ntm --batch 16 --memory --no-csv   # + peak memory

For the NTM, "fused" is the whole sequence as one op (memops.ntm_sequence), "cpp" / "reference" the
module step by step on those ops, and with --compile "compiled" is torch.compile(fullgraph=True) of the
step-by-step module on the reference ops (plain PyTorch, which the compiler can fuse); its compile
time (first forward, first backward) is printed, not timed.
"""

import time

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ENV_FIELDS, Env, append_csv, format_table, time_us  # noqa: E402

import memops  # noqa: E402
from memops.app.recipes import NTMRecipe, RecallRecipe, bce_cost  # noqa: E402
from memops.testing import saved_tensor_bytes  # noqa: E402

DEFAULT_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "models.csv")
FIELDS = ENV_FIELDS + ["model", "task", "steps", "batch", "backend", "pass", "us", "vs_reference"]
MEMORY_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "models_memory.csv")
MEMORY_FIELDS = ENV_FIELDS + ["model", "task", "steps", "batch", "backend", "peak_mib", "saved_mib"]


def peak_memory_mib(step, device):
    """The peak of live tensor memory during one call of `step`, above where it started, in MiB. On a
    CPU from torch.profiler's memory timeline (every allocation of the CPU allocator, those inside the
    ops included; a kernel's own small scratch vectors are not in it); on CUDA the caching allocator's
    peak."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    import json
    import tempfile
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # (export_memory_timeline: deprecated for CUDA's history)
        path = os.path.join(tmp, "timeline.raw.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)
    live = [sum(s) for s in sizes]
    return (max(live) - live[0]) / 2**20 if live else 0.0


def _args(**given):
    """The argparse.Namespace `memops train` would pass a recipe, with its defaults."""
    names = ["lr", "controller", "controller_size", "controller_layers", "memory_slots", "memory_width", "read_heads",
             "write_heads", "shift_width", "memory_init", "model", "hidden_size"]
    return argparse.Namespace(**dict({n: None for n in names}, task_options={}, dropout=0.0, **given))


def cases(name, batch_size, length, device):
    """(task, steps, model, forward(model) -> output, loss(model) -> scalar, uses memops ops)."""
    if name == "ntm":
        recipe = NTMRecipe.create("copy", _args())
        batch = recipe.task.sample(batch_size, generator=torch.Generator().manual_seed(0), length=length)
        batch = type(batch)(*(t.to(device) for t in batch))
        return ("copy", batch.inputs.shape[0], recipe, lambda m: m(batch.inputs),
                lambda m: bce_cost(m(batch.inputs)[0], batch))
    recipe = RecallRecipe.create("nse-recall", _args(model=name))
    batch = recipe.task.sample(batch_size, generator=torch.Generator().manual_seed(0), length=16)
    ids, lengths, labels = batch.ids.to(device), batch.lengths.to(device), batch.labels.to(device)
    return ("nse-recall", ids.shape[1], recipe, lambda m: m(ids, lengths),
            lambda m: F.cross_entropy(m(ids, lengths), labels))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=["ntm", "nse", "lstm"], default=["ntm", "nse", "lstm"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--length", type=int, default=20, help="copy length for the NTM; its sequence has 2L+1 steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--min-run-time", type=float, default=2.0)
    p.add_argument("--compile", action="store_true",
                   help="NTM: also time torch.compile of the stepwise module on the reference ops (minutes)")
    p.add_argument("--memory", action="store_true",
                   help="NTM: also the peak memory of a training step and what it saves for the backward, fused "
                        "against step by step (rows to results/models_memory.csv)")
    p.add_argument("--csv", default=DEFAULT_CSV)
    p.add_argument("--no-csv", dest="csv", action="store_const", const=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = Env(args.device)
    print(env.describe())
    if env.busy_warning():
        print(env.busy_warning())
    backends = [b for b in memops.available_backends(args.device) if b != "reference"] + ["reference"]
    rows, table, memory_rows, memory_table = [], [], [], []
    for name in args.models:
        for batch_size in args.batch:
            task, steps, recipe, forward, loss = cases(name, batch_size, args.length, args.device)
            torch.manual_seed(0)
            model = recipe.build().to(args.device)
            times = {}
            # the NTM: "fused" is the whole sequence as one op (memops.ntm_sequence, the module's default
            # on the compiled ops); "cpp" and the others run the module step by step on that backend's ops
            runs = ["torch"] if name == "lstm" else (["fused"] if name == "ntm" and "cpp" in backends else []) + backends
            runs += ["compiled"] if name == "ntm" and args.compile else []
            for backend in runs:
                run_model = model
                if name == "ntm":
                    model.backend = {"fused": "cpp", "compiled": "reference"}.get(backend, backend)
                    model.fused = backend == "fused"
                    if backend == "compiled":
                        torch._dynamo.reset()
                        run_model = torch.compile(model, fullgraph=True)
                        start = time.perf_counter()
                        with torch.no_grad():
                            forward(run_model)
                        mid = time.perf_counter()
                        loss(run_model).backward()
                        print(f"torch.compile of the stepwise NTM (batch {batch_size}, {steps} steps): "
                              f"forward {mid - start:.1f} s, forward + backward {time.perf_counter() - mid:.1f} s "
                              "to compile", flush=True)
                elif name == "nse":
                    model.encoder.backend = backend

                def fwd():
                    with torch.no_grad():
                        forward(run_model)

                def step():
                    model.zero_grad(set_to_none=True)
                    loss(run_model).backward()

                times[backend] = {"fwd": time_us(fwd, args.device, min_run_time=args.min_run_time),
                                  "fwd+bwd": time_us(step, args.device, min_run_time=args.min_run_time)}
                if args.memory and name == "ntm" and backend in ("fused", "cpp"):
                    model.zero_grad(set_to_none=True)
                    peak = peak_memory_mib(step, args.device)
                    saved = saved_tensor_bytes(lambda: loss(run_model)) / 2**20
                    model.zero_grad(set_to_none=True)
                    memory_rows.append(dict(env.columns(), model=name, task=task, steps=steps, batch=batch_size,
                                            backend=backend, peak_mib=f"{peak:.3f}", saved_mib=f"{saved:.3f}"))
                    memory_table.append([name, batch_size, steps, backend, f"{peak:.2f}", f"{saved:.2f}"])
            for backend, by_pass in times.items():
                for pass_, us in by_pass.items():
                    ratio = times["reference"][pass_] / us if "reference" in times else None
                    rows.append(dict(env.columns(), model=name, task=task, steps=steps, batch=batch_size,
                                     backend=backend, **{"pass": pass_}, us=f"{us:.1f}",
                                     vs_reference="" if ratio is None else f"{ratio:.2f}"))
                    vs_cpp = times["cpp"][pass_] / us if "cpp" in times and name == "ntm" else None
                    table.append([name, batch_size, steps, backend, pass_, f"{us / 1000:.2f}",
                                  "" if ratio is None else f"{ratio:.2f}x", "" if vs_cpp is None else f"{vs_cpp:.2f}x"])
    print(format_table(["model", "batch", "steps", "backend", "pass", "ms per call", "vs reference", "vs cpp steps"],
                       table, right=(1, 2, 5, 6, 7)))
    if memory_table:
        print("\npeak memory of a training step (forward + backward, gradients set to None before), MiB:")
        print(format_table(["model", "batch", "steps", "backend", "peak", "saved for backward"], memory_table,
                           right=(1, 2, 4, 5)))
    if args.csv:
        append_csv(args.csv, rows, FIELDS)
        print(f"appended {len(rows)} rows to {os.path.relpath(args.csv)}")
        if memory_rows:
            memory_csv = os.path.join(os.path.dirname(os.path.abspath(args.csv)), os.path.basename(MEMORY_CSV))
            append_csv(memory_csv, memory_rows, MEMORY_FIELDS)
            print(f"appended {len(memory_rows)} rows to {os.path.relpath(memory_csv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
