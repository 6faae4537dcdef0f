"""Train MemN2N on bAbI tasks with restarts and keep the best of each task by validation error.

    python examples/babi/train_tasks.py --data ../shared/data/babi/en --tasks 1-20 --restarts 5 \
        --runs runs/babi-1k --ship examples/checkpoints/babi

Each restart is `memops train babi --task N --seed S` (the paper's settings; 1 thread); the restart
whose best.pt has the lowest validation error (ties: the lower validation loss) is copied to
SHIP/qaN.pt, and SHIP/results.json records every restart's error, loss, epochs, time and command
(a later invocation with other seeds adds its restarts to those recorded).
Extra arguments after `--` go to `memops train` (e.g. -- --size 10k, or -- --model dmn).
--weights-only ships the checkpoint without the optimizer's and the random generators' states (eval
and plot need neither; Adam's two moments would triple a DMN+ checkpoint).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch

from memops.app.checkpoints import export_model


def parse_tasks(text):
    tasks = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        tasks += list(range(int(lo), int(hi or lo) + 1))
    return tasks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tasks", default="1-20")
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/babi-1k")
    parser.add_argument("--ship", default=None, help="copy each task's best checkpoint here as qaN.pt")
    parser.add_argument("--name", default="qa{task}.pt", help="file name in --ship (default qa{task}.pt)")
    parser.add_argument("--results-name", default="results.json", help="in --ship (else --runs)")
    parser.add_argument("--weights-only", action="store_true",
                        help="ship without the optimizer and RNG states (not resumable; eval and plot work)")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    results_path = os.path.join(args.ship or args.runs, args.results_name)
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for task in parse_tasks(args.tasks):
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.restarts):
            out = os.path.join(args.runs, f"task{task}-seed{seed}")
            command = ["memops", "train", "babi", "--task", str(task), "--data", args.data, "--seed", str(seed),
                       "--out", out, "--threads", "1", "--no-progress", *args.extra]
            if os.path.exists(os.path.join(out, "best.pt")) and os.path.exists(os.path.join(out, "done")):
                pass  # finished before
            else:
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(args.runs, exist_ok=True)
                start = time.time()
                with open(os.path.join(os.path.dirname(out) or ".", f"task{task}-seed{seed}.log"), "w") as log:
                    code = subprocess.call([sys.executable, "-m", "memops", *command[1:]], stdout=log,
                                           stderr=subprocess.STDOUT)
                if code != 0:
                    print(f"task {task} seed {seed}: memops train exited {code}", flush=True)
                    continue
                with open(os.path.join(out, "done"), "w") as f:
                    f.write(f"{time.time() - start:.1f}\n")
            ckpt = torch.load(os.path.join(out, "best.pt"), weights_only=True)
            last = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
            runs.append({"seed": seed, "valid_error": ckpt["eval"]["eval_error"], "valid_loss": ckpt["eval"]["eval_loss"],
                         "best_epoch": ckpt["step"] // ckpt["recipe"]["epoch_steps"],
                         "epochs": last["step"] // last["recipe"]["epoch_steps"],
                         "train_s": round(last["wall_s"], 1), "wall_s": float(open(os.path.join(out, "done")).read()),
                         "out": out, "command": " ".join(command)})
            print(f"task {task} seed {seed}: valid error {100 * runs[-1]['valid_error']:.1f}% "
                  f"(epoch {runs[-1]['best_epoch']}), {runs[-1]['wall_s']:.0f} s", flush=True)
        seeds = {r["seed"] for r in runs}
        runs += [r for r in results.get(str(task), {}).get("restarts", []) if r["seed"] not in seeds]
        runs.sort(key=lambda r: r["seed"])
        if not runs:
            continue
        best = min(runs, key=lambda r: (r["valid_error"], r["valid_loss"]))
        results[str(task)] = {"best": best, "restarts": runs}
        if args.ship:
            os.makedirs(args.ship, exist_ok=True)
            shipped = os.path.join(args.ship, args.name.format(task=task))
            if args.weights_only:
                export_model(os.path.join(best["out"], "best.pt"), shipped)
            else:
                shutil.copy(os.path.join(best["out"], "best.pt"), shipped)
        os.makedirs(os.path.dirname(results_path) or ".", exist_ok=True)
        with open(results_path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"task {task}: best seed {best['seed']}, valid error {100 * best['valid_error']:.1f}%", flush=True)


if __name__ == "__main__":
    main()
