"""Time the NTM module end to end: one training step (forward over a sequence, then backward) and
the forward alone, for each backend, at the paper's settings.

    python benchmarks/bench_ntm.py                     # copy at length 20 (41 steps), batch 16 and 64
    python benchmarks/bench_ntm.py --batch 1 --threads 1 --no-csv

The model is memops.nn.NTM as `memops train copy` builds it (LSTM 100, memory 128 x 20, one read and
one write head, 3 shifts); the input is a copy-task batch whose sequences all have --length, so every
step of every sequence is real work. The backends differ only in the memory ops (ntm_address, read,
write); the controller and head layers are the same PyTorch calls in every column, so the ratio is
that of the whole model, not of the ops alone (for those, see bench_ops.py). Results are appended to
benchmarks/results/ntm.csv with the environment and commit (harness.Env).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ENV_FIELDS, Env, append_csv, format_table, time_us  # noqa: E402

import memops  # noqa: E402
from memops.tasks import get_task  # noqa: E402
from memops.recipes import NTMRecipe, bce_cost  # noqa: E402

DEFAULT_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "ntm.csv")
FIELDS = ENV_FIELDS + ["task", "length", "steps", "batch", "backend", "pass", "us", "vs_reference"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--length", type=int, default=20, help="copy length; the sequence has 2L+1 steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--min-run-time", type=float, default=2.0)
    p.add_argument("--csv", default=DEFAULT_CSV)
    p.add_argument("--no-csv", dest="csv", action="store_const", const=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = Env(args.device)
    print(env.describe())
    if env.busy_warning():
        print(env.busy_warning())
    task = get_task("copy")
    defaults = {k: None for k in ("lr", "controller", "controller_size", "controller_layers", "memory_slots",
                                  "memory_width", "read_heads", "write_heads", "shift_width", "memory_init")}
    recipe = NTMRecipe.create("copy", argparse.Namespace(task_options={}, **defaults))  # as `memops train copy`
    backends = [b for b in memops.available_backends(args.device) if b != "reference"] + ["reference"]
    rows, table = [], []
    for batch_size in args.batch:
        batch = task.sample(batch_size, generator=torch.Generator().manual_seed(0), length=args.length)
        batch = type(batch)(*(t.to(args.device) for t in batch))
        torch.manual_seed(0)
        model = recipe.build().to(args.device)
        times = {}
        for backend in backends:
            model.backend = backend

            def forward():
                with torch.no_grad():
                    model(batch.inputs)

            def train_step():
                model.zero_grad(set_to_none=True)
                bce_cost(model(batch.inputs)[0], batch).backward()

            times[backend] = {"fwd": time_us(forward, args.device, min_run_time=args.min_run_time),
                              "fwd+bwd": time_us(train_step, args.device, min_run_time=args.min_run_time)}
        for backend in backends:
            for pass_ in ("fwd", "fwd+bwd"):
                us = times[backend][pass_]
                ratio = times["reference"][pass_] / us
                rows.append(dict(env.columns(), task="copy", length=args.length, steps=batch.inputs.shape[0],
                                 batch=batch_size, backend=backend, **{"pass": pass_}, us=f"{us:.1f}",
                                 vs_reference=f"{ratio:.2f}"))
                table.append([batch_size, backend, pass_, f"{us / 1000:.2f}", f"{ratio:.2f}x"])
    print(format_table(["batch", "backend", "pass", "ms per step", "vs reference"], table, right=(0, 3, 4)))
    if args.csv:
        append_csv(args.csv, rows, FIELDS)
        print(f"appended {len(rows)} rows to {os.path.relpath(args.csv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
