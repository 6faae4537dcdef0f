"""memops train TASK: train an NTM on one of the paper's tasks, with progress, checkpoints and a curve.

    memops train copy --out runs/copy                  # paper settings, until --steps
    memops train copy --out runs/copy --resume         # go on from runs/copy/checkpoint.pt
    memops train priority-sort --batch-size 32 --lr 1e-4 --device cuda --backend reference

Defaults are the paper's (Graves et al. 2014, table 2; `memops.tasks`): LSTM controller of 100 units,
memory 128 x 20, 3 shifts, RMSProp (lr 1e-4, or 3e-5 for ngrams and priority sort; momentum 0.9,
decay 0.95) and gradient clipping (each gradient element to [-10, 10]). The paper trained on one
sequence at a time; the batch here defaults to 16 sequences (the loss is the mean over them, so
RMSProp's step size does not depend on it).

The loss is the binary cross-entropy of the scored outputs, summed over the bits of a sequence and
averaged over the batch: the paper's "cost per sequence", reported in bits. Every --eval-every steps
the model is evaluated on a fixed set of sequences (drawn from --seed, the same for every run with
that seed), a checkpoint is written, and OUT/metrics.csv and OUT/learning_curve.png are updated.

Files in OUT: checkpoint.pt (the latest: weights, optimizer, step, data-generator state; --resume
continues exactly where it stopped), best.pt (the same, from the evaluation with the lowest cost so
far: NTM training has spikes, so evaluate and plot this one), metrics.csv, learning_curve.png.
Checkpoints load weights-only: opening one never executes code.
A step whose loss or gradient is not finite is skipped (counted in the csv); 10 in a row stop training.
"""

import argparse
import csv
import math
import os
import sys
import time

HELP = "train an NTM on a paper task (copy, repeat-copy, associative-recall, ngrams, priority-sort)"

FORMAT = "memops-checkpoint/1"
MODEL_OPTIONS = ("controller", "controller_size", "controller_layers", "memory_slots", "memory_width",
                 "read_heads", "write_heads", "shift_width", "memory_init")
CSV_FIELDS = ["step", "sequences", "wall_s", "train_bits", "eval_bits", "eval_bit_errors", "reference_bits",
              "nonfinite_steps"]
MAX_NONFINITE_IN_A_ROW = 10


# --------------------------------------------------------------------------------------------- args

def _task_names():
    from .tasks import TASKS

    return sorted(TASKS)


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


def merge_task_options(task, base, overrides):
    """`base` task options updated by `overrides`, where a shorthand in `overrides` (length=L) replaces
    the settings it stands for in `base` (min_length, max_length)."""
    merged = dict(base)
    for short, covered in getattr(task, "ranges", {}).items():
        if short in overrides:
            for key in covered:
                merged.pop(key, None)
    merged.update(overrides)
    return merged


def add_model_arguments(parser):
    g = parser.add_argument_group("model (default: the paper's settings for the task)")
    g.add_argument("--controller", choices=["lstm", "feedforward"])
    g.add_argument("--controller-size", type=int, metavar="C")
    g.add_argument("--controller-layers", type=int, metavar="L")
    g.add_argument("--memory-slots", type=int, metavar="N")
    g.add_argument("--memory-width", type=int, metavar="W")
    g.add_argument("--read-heads", type=int, metavar="R")
    g.add_argument("--write-heads", type=int, metavar="H")
    g.add_argument("--shift-width", type=int, metavar="S", help="odd number of allowed shifts")
    g.add_argument("--memory-init", choices=["constant", "learned", "random"], help="default: constant")


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
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    add_run_arguments(parser)
    o = parser.add_argument_group("optimiser")
    o.add_argument("--lr", type=float, default=None, help="RMSProp learning rate (default: the paper's for the task)")
    o.add_argument("--momentum", type=float, default=0.9)
    o.add_argument("--decay", type=float, default=0.95, help="RMSProp decay of the squared-gradient average")
    o.add_argument("--clip", type=float, default=10.0, help="clip each gradient element to [-CLIP, CLIP]; 0: off")
    e = parser.add_argument_group("progress")
    e.add_argument("--eval-every", type=int, default=500, help="steps between evaluations and checkpoints")
    e.add_argument("--eval-sequences", type=int, default=256, help="size of the fixed evaluation set")
    e.add_argument("--log-every", type=int, default=50, help="steps between progress lines / csv rows")
    e.add_argument("--stop-at", type=float, default=None, metavar="BITS",
                   help="stop once the evaluation cost is below BITS per sequence")
    e.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    add_model_arguments(parser)
    parser.add_argument("--task-option", action="append", metavar="NAME=VALUE",
                        help="override a task setting, e.g. max_length=10 (repeatable)")


# ---------------------------------------------------------------------------------- models, tasks

def model_config(task, args):
    """The model options: the paper's for `task`, overridden by any given on the command line."""
    config = {k: v for k, v in task.paper.items() if k in MODEL_OPTIONS}
    config.setdefault("memory_init", "constant")
    for key in MODEL_OPTIONS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    return config


def build_model(task, config, backend=None):
    from .nn import NTM

    return NTM(task.input_size, task.output_size, backend=backend, **config)


def loss_fn(logits, batch):
    """Binary cross-entropy of the scored outputs, summed per sequence, mean over the batch (nats)."""
    import torch.nn.functional as F

    per_bit = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")
    return (per_bit * batch.mask[..., None]).sum() / batch.mask.shape[1]


def to_device(batch, device):
    return type(batch)(*(t.to(device) for t in batch))


def evaluate(model, task, batches, device):
    """Mean bits and bit errors per sequence over `batches` (and the task's reference cost, if any)."""
    import torch

    from .tasks import sequence_cost

    totals = {"bits": 0.0, "bit_errors": 0.0, "reference_bits": 0.0}
    count = 0
    has_reference = False
    with torch.no_grad():
        for batch in batches:
            n = batch.inputs.shape[1]
            logits, _ = model(batch.inputs.to(device))
            cost = sequence_cost(logits.float().cpu(), batch)
            totals["bits"] += cost["bits"] * n
            totals["bit_errors"] += cost["bit_errors"] * n
            reference = task.reference_cost(batch)
            if reference is not None:
                has_reference = True
                totals["reference_bits"] += reference * n
            count += n
    result = {k: v / max(count, 1) for k, v in totals.items()}
    if not has_reference:
        result["reference_bits"] = None
    return result


def eval_set(task, sequences, seed, batch_size=64, **task_options):
    """A fixed list of batches, drawn from its own generator so it is the same in every run."""
    import torch

    generator = torch.Generator().manual_seed(10_000 + seed)
    batches, left = [], sequences
    while left > 0:
        n = min(batch_size, left)
        batches.append(task.sample(n, generator=generator, **task_options))
        left -= n
    return batches


# ------------------------------------------------------------------------------------- checkpoints

def save_checkpoint(path, payload):
    """Write atomically: a crash while saving leaves the previous checkpoint intact."""
    import torch

    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    """The checkpoint dict, loaded weights-only (tensors and plain containers; never executes code)."""
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"memops: no checkpoint at {path}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"memops: {path} is not a memops checkpoint (format {FORMAT})")
    return ckpt


def model_from_checkpoint(path, device="cpu", backend=None):
    """(model in eval mode, task, checkpoint dict) from a checkpoint written by `memops train`."""
    from .tasks import get_task

    ckpt = load_checkpoint(path, device)
    task = get_task(ckpt["task"])
    model = build_model(task, ckpt["model_config"], backend=backend).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, task, ckpt


# ------------------------------------------------------------------------------------ progress, csv

class Progress:
    """One status line, redrawn in place on a terminal; a plain line every --log-every steps otherwise."""

    def __init__(self, total, start, plain, stream=sys.stderr):
        self.total, self.start_step, self.stream = total, start, stream
        self.plain = plain or not stream.isatty()
        self.t0 = time.perf_counter()

    def update(self, step, fields, final=False):
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.start_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        width = 24
        done = int(width * step / max(self.total, 1))
        bar = "#" * done + "-" * (width - done)
        text = " | ".join([f"[{bar}] {step}/{self.total}", f"{rate:.1f} step/s", *fields, f"eta {_duration(eta)}"])
        if self.plain:
            print(text, file=self.stream, flush=True)
        else:
            print("\r" + text + "\x1b[K", end="\n" if final else "", file=self.stream, flush=True)

    def message(self, text):
        print(("" if self.plain else "\r\x1b[K") + text, file=self.stream, flush=True)


def _duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def read_metrics(path):
    """The rows of a metrics.csv as dicts of floats (empty fields -> None)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def _rewrite_metrics(path, upto_step):
    """On resume, drop rows logged after the checkpoint we restart from (they will be logged again)."""
    rows = [r for r in read_metrics(path) if r["step"] <= upto_step] if os.path.exists(path) else []
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _fmt(r.get(k)) for k in CSV_FIELDS})


def _fmt(value):
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else f"{value:.6g}"


def plot_learning_curve(metrics_path, png_path, title):
    """learning_curve.png from metrics.csv: training and evaluation bits per sequence (log scale)."""
    from ._plotting import pyplot

    plt = pyplot()
    if plt is None:
        return False
    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    train = [(r["sequences"], r["train_bits"]) for r in rows if r["train_bits"] is not None]
    evals = [(r["sequences"], r["eval_bits"]) for r in rows if r["eval_bits"] is not None]
    refs = [(r["sequences"], r["reference_bits"]) for r in rows if r["reference_bits"] is not None]
    if train:
        ax.plot(*zip(*train), lw=0.8, alpha=0.6, label="training batches")
    if evals:
        ax.plot(*zip(*evals), marker="o", ms=3, label="evaluation set")
    if refs:
        ax.plot(*zip(*refs), ls="--", color="k", lw=1, label="optimal estimator")
    ax.set_yscale("log")
    ax.set_xlabel("sequences seen")
    ax.set_ylabel("cost (bits per sequence)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return True


# -------------------------------------------------------------------------------------------- train

def run(args):
    import torch

    from .tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or os.path.join("runs", f"{args.task}-seed{args.seed}")
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, "checkpoint.pt")
    best_path = os.path.join(out, "best.pt")
    metrics_path = os.path.join(out, "metrics.csv")
    curve_path = os.path.join(out, "learning_curve.png")
    device = torch.device(args.device)
    task_options = parse_task_options(args.task_option)
    task = get_task(args.task)

    if args.resume:
        ckpt = load_checkpoint(ckpt_path, device)
        if ckpt["task"] != args.task:
            print(f"memops train: {ckpt_path} was trained on {ckpt['task']!r}, not {args.task!r}", file=sys.stderr)
            return 2
        config, task_options = ckpt["model_config"], ckpt["task_options"]
        seed, batch_size = ckpt["seed"], ckpt["batch_size"]
        hyper = ckpt["hyper"]
    else:
        if os.path.exists(ckpt_path):
            print(f"memops train: {ckpt_path} exists; pass --resume to continue it or choose another --out",
                  file=sys.stderr)
            return 2
        ckpt, config, seed, batch_size = None, model_config(task, args), args.seed, args.batch_size
        hyper = {"lr": args.lr if args.lr is not None else task.paper["lr"], "momentum": args.momentum,
                 "decay": args.decay, "clip": args.clip}
    task.sample(1, generator=torch.Generator().manual_seed(0), **task_options)  # bad options fail now

    torch.manual_seed(seed)
    model = build_model(task, config, backend=args.backend).to(device)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=hyper["lr"], alpha=hyper["decay"],
                                    momentum=hyper["momentum"])
    data = torch.Generator().manual_seed(seed)
    step, sequences, wall, nonfinite = 0, 0, 0.0, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        data.set_state(ckpt["data_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, sequences, wall, nonfinite = ckpt["step"], ckpt["sequences"], ckpt["wall_s"], ckpt["nonfinite_steps"]
    _rewrite_metrics(metrics_path, step)
    evaluation = eval_set(task, args.eval_sequences, seed, **task_options)
    params = sum(p.numel() for p in model.parameters())
    print(f"memops train {args.task}: {task.describe()}\n  model {model.cell.extra_repr()} ({params} parameters),"
          f" backend {args.backend or 'auto'}, device {device}\n  RMSProp lr {hyper['lr']:g} momentum "
          f"{hyper['momentum']:g} decay {hyper['decay']:g}, clip {hyper['clip']:g}, batch {batch_size}, "
          f"seed {seed}; {'resuming at step ' + str(step) if ckpt else 'from scratch'} -> {out}", file=sys.stderr)

    best = ckpt.get("best_eval_bits", math.inf) if ckpt else math.inf

    def checkpoint(is_best):
        payload = {
            "format": FORMAT, "task": args.task, "task_options": task_options, "model_config": config,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "hyper": hyper, "seed": seed,
            "batch_size": batch_size, "step": step, "sequences": sequences, "wall_s": wall,
            "nonfinite_steps": nonfinite, "data_rng": data.get_state(), "torch_rng": torch.get_rng_state(),
            "eval_bits": last_eval["bits"], "best_eval_bits": best,
        }
        save_checkpoint(ckpt_path, payload)
        if is_best:
            save_checkpoint(best_path, payload)

    progress = Progress(args.steps, step, args.no_progress)
    window, in_a_row, last_eval, status = [], 0, None, 0
    t_last = time.perf_counter()
    with open(metrics_path, "a", newline="") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=CSV_FIELDS)
        while step < args.steps:
            batch = to_device(task.sample(batch_size, generator=data, **task_options), device)
            model.train()
            logits, _ = model(batch.inputs)
            loss = loss_fn(logits, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            finite = bool(torch.isfinite(loss)) and all(
                bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
            if finite:
                if hyper["clip"] > 0:
                    torch.nn.utils.clip_grad_value_(model.parameters(), hyper["clip"])
                optimizer.step()
                window.append(loss.item() / math.log(2))
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
                       "train_bits": sum(window) / len(window) if window else None, "nonfinite_steps": nonfinite}
                window = []
                if do_eval:
                    model.eval()
                    last_eval = evaluate(model, task, evaluation, device)
                    row.update(eval_bits=last_eval["bits"], eval_bit_errors=last_eval["bit_errors"],
                               reference_bits=last_eval["reference_bits"])
                writer.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
                csv_file.flush()
                fields = [f"loss {row['train_bits']:.3g} bits/seq" if row["train_bits"] is not None else "loss -"]
                if last_eval:
                    fields.append(f"eval {last_eval['bits']:.3g} bits/seq, {last_eval['bit_errors']:.3g} bit errors")
                progress.update(step, fields, final=step == args.steps)
                if do_eval:
                    is_best = last_eval["bits"] < best
                    best = min(best, last_eval["bits"])
                    checkpoint(is_best)
                    plot_learning_curve(metrics_path, curve_path, f"NTM on {args.task}")
                    t_last = time.perf_counter()  # wall_s counts training time, not evaluation
                if do_eval and args.stop_at is not None and last_eval["bits"] < args.stop_at:
                    progress.message(f"evaluation cost {last_eval['bits']:.4g} < {args.stop_at:g} bits per sequence"
                                     f" at step {step}; stopping")
                    break
            if status:
                break
    if last_eval:
        print(f"memops train {args.task}: step {step}, {sequences} sequences, {_duration(wall)} training; "
              f"evaluation {last_eval['bits']:.4g} bits/seq, {last_eval['bit_errors']:.4g} bit errors/seq"
              + (f" (optimal estimator {last_eval['reference_bits']:.4g})" if last_eval["reference_bits"] else "")
              + f"; non-finite steps {nonfinite}", file=sys.stderr)
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(prog="memops train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
