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
metrics.csv, learning_curve.png. Checkpoints load weights-only (opening one never executes code) and
carry the run's whole configuration and a checksum of their tensor data. A step whose loss or gradient
is not finite is skipped (counted in the csv); 10 in a row stop training.

Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes checkpoint.pt, prints how to resume and
exits with 130 / 143. `--resume` restores every option of the run; an option given again with another
value is refused, except those that may change (--steps, the progress, device, backend and threads).

Several processes: `torchrun --nproc_per_node K -m memops train TASK ...` trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA); --batch-size is per process, rank 0 writes the files.
"""

import argparse
import csv
import gc
import math
import os
import sys
import time

import signal

from .checkpoints import CheckpointError, checksum, load_checkpoint, remove_stale_temporaries, save_checkpoint
from .progress import Progress, csv_fields, duration, format_value, plot_learning_curve, rewrite_metrics

HELP = "train a model on a task: an NTM on a paper task (copy, ...), an NSE on nse-recall, nse-nli, nse-classify"

MAX_NONFINITE_IN_A_ROW = 10


# --------------------------------------------------------------------------------------------- args

def _task_names():
    from .recipes import RECIPES

    return sorted(RECIPES)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_float(text):
    value = float(text)
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


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
    n.add_argument("--model", choices=["nse", "lstm", "memn2n", "memnn", "dmn"], default=None,
                   help="the encoder (default: nse); babi: memn2n (default), memnn or dmn (DMN+)")
    n.add_argument("--hidden-size", type=int, default=None, help="default: 64 for nse-recall, 300 on text files")
    n.add_argument("--embed-size", type=int, default=None,
                   help="word vectors on text files (default: 300); babi: d (MemN2N 20, DMN+ 80)")
    n.add_argument("--dropout", type=float, default=0.0, help="default: 0 (babi DMN+: 0.1)")
    n.add_argument("--data", default=None, help="a directory with one *train* and one *dev* file "
                                                 "(.jsonl for nse-nli, .tsv for nse-classify)")
    n.add_argument("--glove", default=None, help="GloVe-format text vectors to start the embedding from")
    n.add_argument("--vocab-size", type=int, default=None, help="keep the most frequent words only")


def add_run_arguments(parser):
    """Options every command that runs a model takes."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--backend", default=None,
                        help="memops backend for the model's ops (default: auto; see `memops check --help`)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch (default: torch's choice)")


def add_arguments(parser):
    parser.add_argument("task", choices=_task_names())
    parser.add_argument("--out", default=None, help="output directory (default: runs/TASK-seedSEED)")
    parser.add_argument("--steps", type=positive_int, default=20000, help="training steps, in all (default: 20000)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="sequences per step (per process under torchrun; default: 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restarts", type=positive_int, default=1, metavar="K",
                        help="train K times, seeds SEED .. SEED+K-1, each in OUT/seedS/, and copy the best "
                             "restart's best.pt (lowest evaluation cost) to OUT/best.pt (default: 1)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.pt with every option of that run (only --steps and "
                             "the progress, device, backend and thread options may change)")
    add_run_arguments(parser)
    o = parser.add_argument_group("optimiser")
    o.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the paper's for the task)")
    o.add_argument("--momentum", type=non_negative_float, default=0.9, help="RMSProp momentum (NTM tasks)")
    o.add_argument("--decay", type=non_negative_float, default=0.95,
                   help="RMSProp decay of the squared-gradient average")
    o.add_argument("--weight-decay", type=non_negative_float, default=None, metavar="L2",
                   help="L2 weight: Adam's weight_decay, added to every gradient (babi DMN+ only; default 0.001)")
    o.add_argument("--clip", type=non_negative_float, default=10.0,
                   help="clip each gradient element to [-CLIP, CLIP]; 0: off")
    e = parser.add_argument_group("progress")
    e.add_argument("--eval-every", type=positive_int, default=500, help="steps between evaluations and checkpoints")
    e.add_argument("--eval-sequences", type=positive_int, default=None,
                   help="size of the fixed evaluation set (default: 256; on text files the whole dev file)")
    e.add_argument("--log-every", type=positive_int, default=50, help="steps between progress lines / csv rows")
    e.add_argument("--stop-at", type=float, default=None, metavar="COST",
                   help="stop once the evaluation cost (bits per sequence; NSE: loss) is below COST")
    e.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    add_model_arguments(parser)
    from .babi import add_arguments as add_babi_arguments

    add_babi_arguments(parser)
    parser.add_argument("--task-option", action="append", metavar="NAME=VALUE",
                        help="override a task setting, e.g. max_length=10 (repeatable)")


# Options a resumed run may change; every other one is the run's own (restored from the checkpoint).
MAY_CHANGE = {"steps", "device", "backend", "threads", "no_progress", "log_every", "stop_at", "resume", "out",
              "restarts"}


def run_config(args):
    """The run's configuration, as a checkpoint stores it: every option of the command line."""
    return {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("task_options", "command")}


def _fail(message):
    print(f"memops train: {message}", file=sys.stderr)
    return 2


def _prepare_out(out, resume):
    """None if OUT can take this run, else why not."""
    if os.path.exists(out) and not os.path.isdir(out):
        return f"--out {out} is a file, not a directory"
    try:
        os.makedirs(out, exist_ok=True)
        # one probe per process: under torchrun every rank checks OUT at once (a shared name raced:
        # one rank removed the file the other had just made, and failed; the other then waited for it)
        probe = os.path.join(out, f".memops-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        return f"cannot write to --out {out}: {e.strerror or e}"
    if not resume:
        for name in ("checkpoint.pt", "metrics.csv"):
            if os.path.exists(os.path.join(out, name)):
                return (f"{os.path.join(out, name)} exists (another run's); pass --resume to continue that run "
                        f"or choose another --out")
    return None


class _Interrupt:
    """SIGINT / SIGTERM: note it and let the current step finish (a second Ctrl-C stops at once)."""

    CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        for signum in self.CODES:
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: no handlers, as before
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @property
    def code(self):
        return self.CODES.get(self.signum, 0)


# -------------------------------------------------------------------------------------------- train

def run(args):
    try:
        return _restarts(args) if args.restarts > 1 else _train(args)
    except CheckpointError as e:
        return _fail(str(e))


def _restarts(args):
    """--restarts K: K runs of _train, seeds SEED .. SEED+K-1, in OUT/seed<S>/ (each resumable: --resume
    continues the unfinished ones and starts those not begun); OUT/best.pt is the best restart's best.pt
    (lowest evaluation cost; ties: the lower seed), OUT/restarts.json lists them all."""
    out = args.out or os.path.join("runs", f"{args.task}-restarts")
    problem = _prepare_out(out, args.resume)
    if problem is None and not args.resume and os.path.exists(os.path.join(out, "restarts.json")):
        problem = (f"{os.path.join(out, 'restarts.json')} exists (another run's); pass --resume to continue "
                   f"those restarts or choose another --out")
    if problem:
        return _fail(problem)
    from .distributed import World, close_group

    World.keep_group = True  # one process group for all the restarts (see World)
    try:
        return _run_restarts(args, out)
    finally:
        World.keep_group = False
        close_group()


def _run_restarts(args, out):
    import copy
    import json
    import shutil

    main = os.environ.get("RANK", "0") == "0"
    runs = []
    for seed in range(args.seed, args.seed + args.restarts):
        one = copy.copy(args)
        one.seed, one.restarts, one.out = seed, 1, os.path.join(out, f"seed{seed}")
        one.resume = args.resume and os.path.exists(os.path.join(one.out, "checkpoint.pt"))
        if main:
            print(f"memops train: restart {seed - args.seed + 1} of {args.restarts} (seed {seed}) -> {one.out}",
                  file=sys.stderr)
        status = _train(one)
        if status:
            if main:
                print(f"memops train: restart with seed {seed} stopped (exit {status}); continue all of them "
                      f"with: memops train {args.task} --out {out} --restarts {args.restarts} --resume",
                      file=sys.stderr)
            return status
        best = load_checkpoint(os.path.join(one.out, "best.pt"), "cpu")
        runs.append({"seed": seed, "out": one.out, "best_cost": best["best"], "best_step": best["step"],
                     "eval": best["eval"]})
    chosen = min(runs, key=lambda r: r["best_cost"])
    if main:
        shutil.copyfile(os.path.join(chosen["out"], "best.pt"), os.path.join(out, "best.pt"))
        with open(os.path.join(out, "restarts.json"), "w") as f:
            json.dump({"restarts": args.restarts, "best_seed": chosen["seed"], "runs": runs}, f, indent=1)
        costs = ", ".join(f"seed {r['seed']}: {r['best_cost']:.4g}" for r in runs)
        print(f"memops train {args.task}: best of {args.restarts} restarts by evaluation cost is seed "
              f"{chosen['seed']} ({costs}); {os.path.join(out, 'best.pt')}", file=sys.stderr)
    return 0


def _train(args):
    import torch

    from .distributed import World, weighted_mean
    from .recipes import recipe_class

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or os.path.join("runs", f"{args.task}-seed{args.seed}")
    ckpt_path, best_path = os.path.join(out, "checkpoint.pt"), os.path.join(out, "best.pt")
    metrics_path, curve_path = os.path.join(out, "metrics.csv"), os.path.join(out, "learning_curve.png")
    world = World(args.device)
    device = world.device

    if world.main:
        problem = _prepare_out(out, args.resume)
        if problem is None and args.resume and not os.path.exists(ckpt_path):
            problem = f"--resume: no checkpoint to resume at {ckpt_path}"
    else:
        problem = None
    problem = world.gather(problem)[0]
    if problem:
        world.close()
        return _fail(problem)

    if args.resume:
        ckpt = load_checkpoint(ckpt_path, "cpu")
        if ckpt["task"] != args.task:
            world.close()
            return _fail(f"{ckpt_path} was trained on {ckpt['task']!r}, not {args.task!r}")
        config = ckpt["config"]
        given = getattr(args, "_given", set())
        changed = sorted(k for k in given if k not in MAY_CHANGE and k in config and getattr(args, k) != config[k])
        if changed:
            world.close()
            return _fail("--resume continues the run with its own options; these differ from it: "
                         + ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)} (the run's: {config[k]})"
                                     for k in changed))
        if config.get("world_size", 1) != world.size:
            world.close()
            return _fail(f"{ckpt_path} was trained by {config.get('world_size', 1)} processes; resume it with "
                         f"as many (torchrun --nproc_per_node {config.get('world_size', 1)})")
        for k, v in config.items():
            if k not in MAY_CHANGE or k not in given:
                setattr(args, k, v)
        args.task_options = parse_task_options(args.task_option)
        recipe = recipe_class(args.task).restore(args.task, ckpt["recipe"])
        hyper = ckpt["hyper"]
    else:
        ckpt = None
        args.task_options = parse_task_options(args.task_option)
        recipe = recipe_class(args.task).create(args.task, args)
        hyper = recipe.hyper(args)
    seed, batch_size = args.seed, args.batch_size
    config = dict(run_config(args), world_size=world.size)
    if world.main:
        remove_stale_temporaries(out)

    # every rank: the same parameters at the start (DDP broadcasts rank 0's), its own torch RNG stream
    torch.manual_seed(seed)
    model = recipe.build(backend=args.backend).to(device)
    torch.manual_seed(seed + 1_000_003 * world.rank)
    optimizer = recipe.optimizer(model.parameters(), hyper)
    data = torch.Generator().manual_seed(seed)  # the same on every rank: each takes its slice
    step, sequences, wall, nonfinite, best = 0, 0, 0.0, 0, math.inf
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        data.set_state(ckpt["data_rng"])
        torch.set_rng_state(ckpt["torch_rng"][world.rank])
        step, sequences, wall = ckpt["step"], ckpt["sequences"], ckpt["wall_s"]
        nonfinite, best = ckpt["nonfinite_steps"], ckpt["best"]
    trained = world.wrap(model)
    fields = csv_fields(recipe)
    if world.main:
        rewrite_metrics(metrics_path, fields, step)
    evaluation = recipe.eval_batches(args.eval_sequences, seed)
    if not evaluation:
        world.close()
        return _fail(f"the evaluation set of {args.task} is empty")
    my_evaluation = evaluation[world.rank::world.size]
    params = sum(p.numel() for p in model.parameters())
    settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in hyper.items())
    if world.main:
        procs = f" x {world.size} processes" if world.size > 1 else ""
        print(f"memops train {recipe.describe()}\n  model {type(model).__name__} ({params} parameters): "
              f"{recipe.state['model']}"
              f"\n  backend {args.backend or 'auto'}, device {device}, {settings}, batch {batch_size}{procs}, "
              f"seed {seed}; {'resuming at step ' + str(step) if ckpt else 'from scratch'} -> {out}", file=sys.stderr)

    def checkpoint(is_best):
        rng_states = world.gather(torch.get_rng_state())
        # every rank's parameters, by checksum: data parallelism keeps them identical, or something broke
        replicas = world.gather(checksum({"model": model.state_dict()}))
        if len(set(replicas)) > 1:
            raise RuntimeError(f"memops train: the ranks' parameters differ at step {step}: {replicas}")
        if not world.main:
            return
        payload = {
            "task": args.task, "config": config, "recipe": recipe.state, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "hyper": hyper, "seed": seed, "batch_size": batch_size,
            "step": step, "sequences": sequences, "wall_s": wall, "nonfinite_steps": nonfinite,
            "data_rng": data.get_state(), "torch_rng": rng_states, "eval": last_eval, "best": best,
            "replicas": replicas,
        }
        save_checkpoint(ckpt_path, payload)
        if is_best:
            save_checkpoint(best_path, payload)

    def evaluate():
        model.eval()
        mine = recipe.evaluate(model, my_evaluation, device) if my_evaluation else {f: 0.0 for f in recipe.eval_fields}
        return weighted_mean(world, mine, sum(recipe.count(b) for b in my_evaluation))

    progress = Progress(args.steps, step, args.no_progress) if world.main else None
    window, in_a_row, last_eval, status = [], 0, None, 0
    t_last = time.perf_counter()
    csv_file = open(metrics_path, "a", newline="") if world.main else None
    writer = csv.DictWriter(csv_file, fieldnames=fields) if csv_file else None
    with _Interrupt() as interrupt:
        while step < args.steps:
            trained.train()
            batch = recipe.sample(batch_size * world.size, data)
            if world.size > 1:
                batch = recipe.shard(batch, world.rank * batch_size, (world.rank + 1) * batch_size)
            loss, value = recipe.loss(trained, batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            # one device sync for all gradients, not one per parameter; the ranks agree on every decision
            finite = math.isfinite(value) and bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
            value, n_finite, stop = world.sum([value if finite else 0.0, float(finite),
                                               float(interrupt.signum is not None)])
            finite = n_finite == world.size
            value /= world.size
            if finite:
                if hyper["clip"] > 0:
                    torch.nn.utils.clip_grad_value_(model.parameters(), hyper["clip"])
                optimizer.step()
                window.append(value)
                in_a_row = 0
            else:
                nonfinite += 1
                in_a_row += 1
                if world.main:
                    progress.message(f"step {step + 1}: loss or gradient not finite; step skipped "
                                     f"({nonfinite} so far)")
                if in_a_row >= MAX_NONFINITE_IN_A_ROW:
                    if world.main:
                        progress.message(f"memops train: {in_a_row} non-finite steps in a row; stopping")
                    status = 1
            step += 1
            sequences += batch_size * world.size
            now = time.perf_counter()
            wall += now - t_last
            t_last = now

            if stop:
                checkpoint(is_best=False)
                if world.main:
                    progress.message(f"memops train: interrupted after step {step}; checkpoint written to "
                                     f"{ckpt_path}\n  resume with: memops train {args.task} --out {out} --resume")
                status = interrupt.code or 130
                break
            do_eval = step % args.eval_every == 0 or step == args.steps or status
            if step % args.log_every == 0 or do_eval:
                row = {"step": step, "sequences": sequences, "wall_s": round(wall, 2),
                       recipe.train_field: sum(window) / len(window) if window else None,
                       "nonfinite_steps": nonfinite}
                window = []
                if do_eval:
                    last_eval = evaluate()
                    row.update(last_eval)
                if world.main:
                    writer.writerow({k: format_value(row.get(k)) for k in fields})
                    csv_file.flush()
                    train_value = row[recipe.train_field]
                    status_fields = [f"loss {train_value:.3g} {recipe.train_unit}" if train_value is not None
                                     else "loss -"]
                    if last_eval:
                        status_fields.append(recipe.summary(last_eval))
                    progress.update(step, status_fields, final=step == args.steps)
                if do_eval:
                    cost = last_eval[recipe.primary]
                    is_best = cost < best
                    best = min(best, cost)
                    checkpoint(is_best)
                    if world.main:
                        plot_learning_curve(metrics_path, curve_path, f"{type(model).__name__} on {args.task}",
                                            recipe)
                    t_last = time.perf_counter()  # wall_s counts training time, not evaluation
                    if args.stop_at is not None and cost < args.stop_at:
                        if world.main:
                            progress.message(f"evaluation cost {cost:.4g} < {args.stop_at:g} at step {step}; "
                                             "stopping")
                        break
            if status:
                break
    if csv_file:
        csv_file.close()
    if last_eval and world.main and not interrupt.signum:
        print(f"memops train {args.task}: step {step}, {sequences} sequences, {duration(wall)} training; "
              f"{recipe.summary(last_eval)}; non-finite steps {nonfinite}", file=sys.stderr)
    # DDP's reducer (held by the wrapper and the parameters' gradient hooks) holds the process group: let
    # them go while the interpreter is alive, so the group's threads are joined in world.close(), not
    # at interpreter exit (where a rank aborted: "terminate called without an active exception")
    model = trained = optimizer = None  # noqa: F841
    gc.collect()
    world.close()
    return status
