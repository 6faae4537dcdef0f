"""Ship the NTM checkpoints that examples/ntm/train_tasks.sh trained: each task's best.pt without its
training state (memops.app.checkpoints.export_model), evaluated with `memops eval --json` on fresh
sequences (256 per row, seed 1) at the training lengths and beyond them, into RESULTS.md and
results.json beside the checkpoints.

    python examples/ntm/ship.py --runs runs/ntm --out examples/checkpoints/ntm
"""

import argparse
import json
import os
import subprocess
import sys

# per task: the evaluation rows (label, memops eval arguments); the first is the training distribution
ROWS = {
    "copy": [("lengths 1-20 (training)", []), ("length 40", ["--length", "40"]), ("length 60", ["--length", "60"]),
             ("length 80", ["--length", "80"])],
    "repeat-copy": [("lengths 1-10, repeats 1-10 (training)", []),
                    ("length 20, repeats 1-10", ["--length", "20"]),
                    ("lengths 1-10, repeats 15", ["--task-option", "repeats=15"])],
    "associative-recall": [("2-6 items (training)", []), ("12 items", ["--length", "12"])],
    "priority-sort": [("20 inputs, 16 outputs (training)", [])],
    "ngrams": [("200 bits (training)", [])],
}


def evaluate(checkpoint, extra):
    cmd = ["memops", "eval", checkpoint, "--json", "--threads", "1"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1]), " ".join(cmd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tasks", nargs="+", default=list(ROWS))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from memops.app.checkpoints import export_model, load_checkpoint

    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}  # other tasks' rows stay
    for task in args.tasks:
        best = os.path.join(args.runs, task, "best.pt")
        if not os.path.exists(best):
            print(f"{task}: no {best}, skipped")
            continue
        shipped = os.path.join(args.out, f"{task}.pt")
        export_model(best, shipped)
        ckpt, last = load_checkpoint(shipped), load_checkpoint(os.path.join(args.runs, task, "checkpoint.pt"))
        rows = []
        for label, extra in ROWS[task]:
            metrics, cmd = evaluate(shipped, extra)
            rows.append(dict(label=label, command=cmd, **metrics))
            print(f"{task} {label}: {metrics}")
        results[task] = dict(checkpoint=shipped, bytes=os.path.getsize(shipped), seed=ckpt["seed"],
                             step=ckpt["step"], sequences=ckpt["sequences"], wall_s=round(ckpt["wall_s"]),
                             steps_run=last["step"], wall_s_run=round(last["wall_s"]), lr=ckpt["hyper"]["lr"],
                             batch_size=ckpt["batch_size"], rows=rows)
    results = {task: results[task] for task in ROWS if task in results}  # the table in the paper's order
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)
    write_table(results, os.path.join(args.out, "RESULTS.md"))


def write_table(results, path):
    lines = ["# NTM on the paper's five tasks: shipped checkpoints", "",
             "Made by `bash examples/ntm/train_tasks.sh runs/ntm` (the settings are in that script) and "
             "`python examples/ntm/ship.py --runs runs/ntm --out examples/checkpoints/ntm`, on the 2-core CPU "
             "machine, one thread per run. Each row is `memops eval CHECKPOINT --json` over 256 fresh "
             "sequences (seed 1); bits are the cost per sequence (binary cross-entropy summed over the "
             "sequence), bit errors are per sequence (an output bit on the wrong side of 1/2). Training "
             "times are wall times on a machine shared by 3-4 such jobs (2-3x its unloaded time). The n-gram "
             "row's optimal cost is the Bayesian estimator's on the same sequences. Where a task stopped "
             "short, its learning curve is beside its checkpoint.", "",
             "| task | checkpoint (step, sequences, training time) | lr | evaluation | bits/seq | bit errors/seq | "
             "optimal bits/seq |", "|---|---|---|---|---|---|---|"]
    for task, r in results.items():
        for i, row in enumerate(r["rows"]):
            head = (f"{task} | `{os.path.basename(r['checkpoint'])}` (step {r['step']:,} of {r['steps_run']:,}, "
                    f"{r['sequences']:,} seq., {r['wall_s'] / 60:.0f} min) | {r['lr']:g}") if i == 0 else " | | "
            ref = row.get("reference_bits")
            lines.append(f"| {head} | {row['label']} | {row['eval_bits']:.3g} | {row['eval_bit_errors']:.3g} | "
                         f"{'' if ref is None else f'{ref:.4g}'} |")
    lines += ["", "Reproduce a row: the command is in results.json (`rows[].command`)."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
