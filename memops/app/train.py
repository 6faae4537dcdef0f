"""memops train TASK: train a model on a task, with progress, checkpoints and a learning curve.

    memops train copy --out runs/copy                  # an NTM on the paper's copy task, paper settings
    memops train copy --out runs/copy --resume         # go on from runs/copy/checkpoint.pt
    memops train priority-sort --batch-size 32 --lr 1e-4 --device cuda --backend reference
    memops train nse-recall --out runs/recall          # an NSE on the recall task (--model lstm: the baseline)
    memops train nse-nli --data ~/snli_1.0 --glove ~/glove.840B.300d.txt   # NSE on SNLI-format JSONL
    memops train nse-classify --data ~/SST-2           # NSE on sentence classification (TSV)

NTM tasks (copy, repeat-copy, associative-recall, ngrams, priority-sort; memops.tasks): defaults are
the paper's (Graves et al. 2014, table 2): LSTM controller of 100 units, memory 128 x 20, 3 shifts,
RMSProp (lr 1e-4, or 3e-5 for ngrams and priority sort; momentum 0.9, decay 0.95) and gradient
clipping (each gradient element to [-10, 10]). The paper trained on one sequence at a time; the batch
here defaults to 16 sequences (the loss is the mean over them, so RMSProp's step size does not depend
on it). The loss is the binary cross-entropy of the scored outputs summed over the bits of a sequence,
averaged over the batch: the paper's "cost per sequence", reported in bits.

NSE tasks: nse-recall (memops.tasks.recall: name the value stored with a queried key), nse-nli
(SNLI-format files: --data DIR holds one *train*.jsonl and one *dev*.jsonl) and nse-classify
(sentence classification, SST / GLUE style: --data DIR holds one *train*.tsv and one *dev*.tsv of
text<TAB>label lines); cross-entropy, Adam (lr 3e-3 for recall, 3e-4 on text files). --model lstm
trains the LSTM baseline instead (for nse-recall sized to the NSE's parameter count).

Every --eval-every steps the model is evaluated on a fixed evaluation set (drawn from --seed, the same
for every run with that seed; on text files the dev file), a checkpoint is written, and metrics.csv and
learning_curve.png are updated. Files in OUT: checkpoint.pt (the latest: weights, optimizer, step,
data-generator state; --resume continues exactly where it stopped), best.pt (the same, from the
evaluation with the lowest cost so far: NTM training has spikes, so evaluate and plot this one),
metrics.csv, learning_curve.png. Checkpoints load weights-only: opening one never executes code.
A step whose loss or gradient is not finite is skipped (counted in the csv); 10 in a row stop training.
"""

import csv
import math
import os
import sys
import time

from .checkpoints import FORMAT, load_checkpoint, save_checkpoint
from .progress import Progress, csv_fields, duration, format_value, plot_learning_curve, rewrite_metrics

HELP = "train a model on a task: an NTM on a paper task (copy, ...), an NSE on nse-recall, nse-nli, nse-classify"

MAX_NONFINITE_IN_A_ROW = 10


# --------------------------------------------------------------------------------------------- args

def _task_names():
    from .recipes import RECIPES

    return sorted(RECIPES)


def parse_task_options(pairs):
    """["max_length=10", "min_length=2"] -> {"max_length": 10, "min_length": 2} (ints, floats or strings)."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--task-option must look like NAME=VALUE, got {pair!r}")
        for convert in (int, float):
            try:
                value = convert(value)
                break
            except ValueError:
                pass
        options[key.strip().replace("-", "_")] = value
    return options


def add_model_arguments(parser):
    g = parser.add_argument_group("NTM tasks: the model (default: the paper's settings for the task)")
    g.add_argument("--controller", choices=["lstm", "feedforward"])
    g.add_argument("--controller-size", type=int, metavar="C")
    g.add_argument("--controller-layers", type=int, metavar="L")
    g.add_argument("--memory-slots", type=int, metavar="N")
    g.add_argument("--memory-width", type=int, metavar="W")
    g.add_argument("--read-heads", type=int, metavar="R")
    g.add_argument("--write-heads", type=int, metavar="H")
    g.add_argument("--shift-width", type=int, metavar="S", help="odd number of allowed shifts")
    g.add_argument("--memory-init", choices=["constant", "learned", "random"], help="default: constant")
    n = parser.add_argument_group("NSE tasks (nse-recall, nse-nli, nse-classify)")
    n.add_argument("--model", choices=["nse", "lstm"], default=None, help="the encoder (default: nse)")
    n.add_argument("--hidden-size", type=int, default=None, help="default: 64 for nse-recall, 300 on text files")
    n.add_argument("--embed-size", type=int, default=None, help="word vectors on text files (default: 300)")
    n.add_argument("--dropout", type=float, default=0.0)
    n.add_argument("--data", default=None, help="a directory with one *train* and one *dev* file "
                                                 "(.jsonl for nse-nli, .tsv for nse-classify)")
    n.add_argument("--glove", default=None, help="GloVe-format text vectors to start the embedding from")
    n.add_argument("--vocab-size", type=int, default=None, help="keep the most frequent words only")


def add_run_arguments(parser):
    """Options every command that runs a model takes."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--backend", default=None,
                        help="memops backend for the model's ops (default: auto; see `memops check --help`)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def add_arguments(parser):
    parser.add_argument("task", choices=_task_names())
    parser.add_argument("--out", default=None, help="output directory (default: runs/TASK-seedSEED)")
    parser.add_argument("--steps", type=int, default=20000, help="training steps, in all (default: 20000)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step (default: 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.pt with its settings (only --steps and the progress, "
                             "device, backend and thread options apply)")
    add_run_arguments(parser)
    o = parser.add_argument_group("optimiser")
    o.add_argument("--lr", type=float, default=None, help="learning rate (default: the paper's for the task)")
    o.add_argument("--momentum", type=float, default=0.9, help="RMSProp momentum (NTM tasks)")
    o.add_argument("--decay", type=float, default=0.95, help="RMSProp decay of the squared-gradient average")
    o.add_argument("--clip", type=float, default=10.0, help="clip each gradient element to [-CLIP, CLIP]; 0: off")
    e = parser.add_argument_group("progress")
    e.add_argument("--eval-every", type=int, default=500, help="steps between evaluations and checkpoints")
    e.add_argument("--eval-sequences", type=int, default=None,
                   help="size of the fixed evaluation set (default: 256; on text files the whole dev file)")
    e.add_argument("--log-every", type=int, default=50, help="steps between progress lines / csv rows")
    e.add_argument("--stop-at", type=float, default=None, metavar="COST",
                   help="stop once the evaluation cost (bits per sequence; NSE: loss) is below COST")
    e.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    add_model_arguments(parser)
    parser.add_argument("--task-option", action="append", metavar="NAME=VALUE",
                        help="override a task setting, e.g. max_length=10 (repeatable)")


# -------------------------------------------------------------------------------------------- train

def run(args):
    import torch

    from .recipes import recipe_class

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or os.path.join("runs", f"{args.task}-seed{args.seed}")
    os.makedirs(out, exist_ok=True)
    ckpt_path, best_path = os.path.join(out, "checkpoint.pt"), os.path.join(out, "best.pt")
    metrics_path, curve_path = os.path.join(out, "metrics.csv"), os.path.join(out, "learning_curve.png")
    device = torch.device(args.device)
    args.task_options = parse_task_options(args.task_option)

    if args.resume:
        ckpt = load_checkpoint(ckpt_path, device)
        if ckpt["task"] != args.task:
            print(f"memops train: {ckpt_path} was trained on {ckpt['task']!r}, not {args.task!r}", file=sys.stderr)
            return 2
        recipe = recipe_class(args.task).restore(args.task, ckpt["recipe"])
        seed, batch_size, hyper = ckpt["seed"], ckpt["batch_size"], ckpt["hyper"]
    else:
        if os.path.exists(ckpt_path):
            print(f"memops train: {ckpt_path} exists; pass --resume to continue it or choose another --out",
                  file=sys.stderr)
            return 2
        ckpt, seed, batch_size = None, args.seed, args.batch_size
        recipe = recipe_class(args.task).create(args.task, args)
        hyper = recipe.hyper(args)

    torch.manual_seed(seed)
    model = recipe.build(backend=args.backend).to(device)
    optimizer = recipe.optimizer(model.parameters(), hyper)
    data = torch.Generator().manual_seed(seed)
    step, sequences, wall, nonfinite, best = 0, 0, 0.0, 0, math.inf
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        data.set_state(ckpt["data_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, sequences, wall = ckpt["step"], ckpt["sequences"], ckpt["wall_s"]
        nonfinite, best = ckpt["nonfinite_steps"], ckpt["best"]
    fields = csv_fields(recipe)
    rewrite_metrics(metrics_path, fields, step)
    evaluation = recipe.eval_batches(args.eval_sequences, seed)
    params = sum(p.numel() for p in model.parameters())
    settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in hyper.items())
    print(f"memops train {recipe.describe()}\n  model {type(model).__name__} ({params} parameters): "
          f"{recipe.state['model']}"
          f"\n  backend {args.backend or 'auto'}, device {device}, {settings}, batch {batch_size}, seed {seed}; "
          f"{'resuming at step ' + str(step) if ckpt else 'from scratch'} -> {out}", file=sys.stderr)

    def checkpoint(is_best):
        payload = {
            "format": FORMAT, "task": args.task, "recipe": recipe.state, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "hyper": hyper, "seed": seed, "batch_size": batch_size,
            "step": step, "sequences": sequences, "wall_s": wall, "nonfinite_steps": nonfinite,
            "data_rng": data.get_state(), "torch_rng": torch.get_rng_state(), "eval": last_eval, "best": best,
        }
        save_checkpoint(ckpt_path, payload)
        if is_best:
            save_checkpoint(best_path, payload)

    progress = Progress(args.steps, step, args.no_progress)
    window, in_a_row, last_eval, status = [], 0, None, 0
    t_last = time.perf_counter()
    with open(metrics_path, "a", newline="") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=fields)
        while step < args.steps:
            model.train()
            loss, value = recipe.loss(model, recipe.sample(batch_size, data), device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            # one device sync for all gradients, not one per parameter
            finite = math.isfinite(value) and bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
            if finite:
                if hyper["clip"] > 0:
                    torch.nn.utils.clip_grad_value_(model.parameters(), hyper["clip"])
                optimizer.step()
                window.append(value)
                in_a_row = 0
            else:
                nonfinite += 1
                in_a_row += 1
                progress.message(f"step {step + 1}: loss or gradient not finite; step skipped ({nonfinite} so far)")
                if in_a_row >= MAX_NONFINITE_IN_A_ROW:
                    progress.message(f"memops train: {in_a_row} non-finite steps in a row; stopping")
                    status = 1
            step += 1
            sequences += batch_size
            now = time.perf_counter()
            wall += now - t_last
            t_last = now

            do_eval = step % args.eval_every == 0 or step == args.steps or status
            if step % args.log_every == 0 or do_eval:
                row = {"step": step, "sequences": sequences, "wall_s": round(wall, 2),
                       recipe.train_field: sum(window) / len(window) if window else None, "nonfinite_steps": nonfinite}
                window = []
                if do_eval:
                    model.eval()
                    last_eval = recipe.evaluate(model, evaluation, device)
                    row.update(last_eval)
                writer.writerow({k: format_value(row.get(k)) for k in fields})
                csv_file.flush()
                train_value = row[recipe.train_field]
                status_fields = [f"loss {train_value:.3g} {recipe.train_unit}" if train_value is not None else "loss -"]
                if last_eval:
                    status_fields.append(recipe.summary(last_eval))
                progress.update(step, status_fields, final=step == args.steps)
                if do_eval:
                    cost = last_eval[recipe.primary]
                    is_best = cost < best
                    best = min(best, cost)
                    checkpoint(is_best)
                    plot_learning_curve(metrics_path, curve_path, f"{type(model).__name__} on {args.task}", recipe)
                    t_last = time.perf_counter()  # wall_s counts training time, not evaluation
                    if args.stop_at is not None and cost < args.stop_at:
                        progress.message(f"evaluation cost {cost:.4g} < {args.stop_at:g} at step {step}; stopping")
                        break
            if status:
                break
    if last_eval:
        print(f"memops train {args.task}: step {step}, {sequences} sequences, {duration(wall)} training; "
              f"{recipe.summary(last_eval)}; non-finite steps {nonfinite}", file=sys.stderr)
    return status

