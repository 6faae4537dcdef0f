"""memops eval CHECKPOINT: a trained model's cost on fresh sequences, e.g. longer than it trained on.

    memops eval runs/copy/best.pt --length 20 40 80
    memops eval runs/recall/best.pt --length 64
    memops eval runs/nli/best.pt --task-option data=snli_1.0_test.jsonl

Prints, for each length (the task's `length` setting; without --length, the training distribution),
the evaluation metrics of the task (NTM tasks: bits and bit errors per sequence; NSE tasks: loss and
accuracy) over --sequences sequences drawn from --seed.
"""

import json

from .checkpoints import model_from_checkpoint
from .train import add_run_arguments, parse_task_options, positive_int

HELP = "evaluate a checkpoint on fresh sequences (e.g. --length 40 80 for generalisation)"


def add_arguments(parser):
    parser.add_argument("checkpoint")
    parser.add_argument("--length", type=positive_int, nargs="+", default=None,
                        help="sequence lengths to test (the task's `length` setting); default: the training lengths")
    parser.add_argument("--sequences", type=positive_int, default=None,
                        help="sequences per length (default: 256; on text files the whole file)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the evaluation sequences (default: 1)")
    parser.add_argument("--task-option", action="append", metavar="NAME=VALUE", help="override a task setting")
    parser.add_argument("--data", default=None,
                        help="a data file to evaluate on (the same as --task-option data=FILE; babi: a bAbI file, "
                             "of which a *_train.txt file's held-out 10%%)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines")
    add_run_arguments(parser)


def run(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, recipe, ckpt = model_from_checkpoint(args.checkpoint, args.device, args.backend)
    overrides = parse_task_options(args.task_option)
    if args.data is not None:
        overrides["data"] = args.data
    fields = list(recipe.eval_fields)
    if not args.json:
        print(f"{recipe.describe()}\ncheckpoint at step {ckpt['step']} ({ckpt['sequences']} sequences); "
              f"{args.sequences or 'default'} sequences per row, seed {args.seed}")
        print(f"{'length':>10} " + " ".join(f"{f[5:] if f.startswith('eval_') else f:>16}" for f in fields))
    for length in args.length or [None]:
        options = overrides if length is None else dict(overrides, length=length)
        result = recipe.evaluate(model, recipe.eval_batches(args.sequences, args.seed, **options), args.device)
        if args.json:
            print(json.dumps({"task": ckpt["task"], "step": ckpt["step"], "length": length, **result,
                              **recipe.eval_details()}), flush=True)
        else:
            cells = ["" if result[f] is None else f"{result[f]:.4g}" for f in fields]
            print(f"{'training' if length is None else length:>10} " + " ".join(f"{c:>16}" for c in cells), flush=True)
            details = recipe.eval_details()
            if details:
                print("  " + ", ".join(f"{k} {v}" for k, v in details.items()), flush=True)
    return 0
