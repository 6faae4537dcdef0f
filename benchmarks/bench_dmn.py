"""Time a DMN+ training step (forward, backward and Adam's step) on bAbI task 2 at batch 100, the episode
on the fused attention GRU (memops.attention_gru, the compiled op) against the same model on the
reference backend (the plain PyTorch loop over facts), at 1 thread and at every thread, in one run.
Rows go to benchmarks/results/dmn.csv; details: benchmarks/README.md.

    python benchmarks/bench_dmn.py
    python benchmarks/bench_dmn.py --data ../shared/data/babi/en-10k --threads 1 2 --no-csv
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ENV_FIELDS, Env, append_csv, format_table, time_us  # noqa: E402

from memops.app.babi import BabiRecipe  # noqa: E402
from memops.app.train import add_arguments  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CSV = os.path.join(HERE, "results", "dmn.csv")
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "babi", "en-10k")
FIELDS = ENV_FIELDS + ["model", "task", "batch", "facts", "words", "passes", "backend", "pass", "us", "vs_reference"]


def case(data, batch_size, device):
    """(recipe, batch): `memops train babi --model dmn --task 2`'s recipe and its first training batch;
    without the files, random word ids of the same sizes (F = 50 sentences of L = 6 words, Lq = 4)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    if os.path.isdir(data):
        args = parser.parse_args(["babi", "--model", "dmn", "--task", "2", "--data", data])
        recipe = BabiRecipe.create("babi", args)
        batch = recipe.sample(batch_size, torch.Generator().manual_seed(0))
        return recipe, [t.to(device) for t in batch[:3]], "qa2 " + os.path.basename(os.path.normpath(data))
    print(f"no bAbI files at {data}: random word ids of task 2's sizes")
    recipe = BabiRecipe("babi", {"kind": "dmn", "vocab": {"words": ["<pad>", "<unk>"] + [f"w{i}" for i in range(38)],
                                                          "answers": [f"a{i}" for i in range(6)]},
                                 "model": {"vocab_size": 40, "num_answers": 6, "embed_size": 80, "passes": 3,
                                           "attention": "gru", "dropout": 0.1}, "task": 2})
    gen = torch.Generator().manual_seed(0)
    story = torch.randint(2, 40, (batch_size, 50, 6), generator=gen)
    question = torch.randint(2, 40, (batch_size, 4), generator=gen)
    labels = torch.randint(0, 6, (batch_size,), generator=gen)
    return recipe, [story.to(device), question.to(device), labels.to(device)], "qa2 sizes (random ids)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="a directory of bAbI files (default: ../shared/data/babi/en-10k)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="thread counts to time (default: 1 and every CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--min-run-time", type=float, default=2.0)
    p.add_argument("--csv", default=DEFAULT_CSV)
    p.add_argument("--no-csv", dest="csv", action="store_const", const=None)
    args = p.parse_args(argv)
    threads = args.threads or sorted({1, os.cpu_count() or 1})
    recipe, (story, question, labels), task = case(args.data, args.batch, args.device)
    fused = "cuda" if args.device.startswith("cuda") else "cpp"
    rows, table = [], []
    for n in threads:
        torch.set_num_threads(n)
        env = Env(args.device)
        print(env.describe())
        if env.busy_warning():
            print(env.busy_warning())
        times = {}
        for backend in (fused, "reference"):
            torch.manual_seed(0)
            model = recipe.build(backend=backend).to(args.device).train()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)

            def step():
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(story, question), labels).backward()
                optimizer.step()

            times[backend] = time_us(step, args.device, min_run_time=args.min_run_time)
        for backend, us in times.items():
            ratio = times["reference"] / us
            rows.append(dict(env.columns(), model="dmn", task=task, batch=args.batch, facts=story.shape[1],
                             words=story.shape[2], passes=model.passes, backend=backend,
                             **{"pass": "fwd+bwd+adam"}, us=f"{us:.1f}", vs_reference=f"{ratio:.2f}"))
            table.append([n, backend, f"{us / 1000:.2f}", f"{ratio:.2f}x"])
    print(f"DMN+ training step (forward, backward, Adam) on {task}: batch {args.batch}, {story.shape[1]} facts of "
          f"{story.shape[2]} words, {recipe.state['model']['passes']} passes, D {recipe.state['model']['embed_size']}")
    print(format_table(["threads", "episode backend", "ms per step", "reference / this"], table, right=(0, 2, 3)))
    if args.csv:
        append_csv(args.csv, rows, FIELDS)
        print(f"appended {len(rows)} rows to {os.path.relpath(args.csv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
