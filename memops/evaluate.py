"""memops eval CHECKPOINT: a trained NTM's cost on fresh sequences, e.g. longer than it trained on.

    memops eval runs/copy/checkpoint.pt --length 20 40 80

Prints, for each length (or the task's training distribution when --length is not given), the mean
cost in bits per sequence and the bit errors per sequence over --sequences sequences drawn from --seed.
"""

import json
import sys

from .train import (add_run_arguments, eval_set, evaluate, merge_task_options, model_from_checkpoint,
                    parse_task_options)

HELP = "evaluate a checkpoint on fresh sequences (e.g. --length 40 80 for generalisation)"


def add_arguments(parser):
    parser.add_argument("checkpoint")
    parser.add_argument("--length", type=int, nargs="+", default=None,
                        help="sequence lengths to test (the task's `length` setting); default: the training lengths")
    parser.add_argument("--sequences", type=int, default=256, help="sequences per length (default: 256)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the evaluation sequences (default: 1)")
    parser.add_argument("--task-option", action="append", metavar="NAME=VALUE", help="override a task setting")
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines")
    add_run_arguments(parser)


def run(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, task, ckpt = model_from_checkpoint(args.checkpoint, args.device, args.backend)
    base = merge_task_options(task, ckpt["task_options"], parse_task_options(args.task_option))
    lengths = args.length or [None]
    if not args.json:
        print(f"{task.name} checkpoint at step {ckpt['step']} ({ckpt['sequences']} sequences); "
              f"{args.sequences} sequences per row, seed {args.seed}")
        print(f"{'length':>10} {'bits/seq':>12} {'bit errors/seq':>15} {'optimal':>10}")
    for length in lengths:
        options = base if length is None else merge_task_options(task, base, {"length": length})
        result = evaluate(model, task, eval_set(task, args.sequences, args.seed, **options), args.device)
        if args.json:
            print(json.dumps({"task": task.name, "step": ckpt["step"], "length": length, **result}))
        else:
            ref = "" if result["reference_bits"] is None else f"{result['reference_bits']:.4g}"
            print(f"{'training' if length is None else length:>10} {result['bits']:>12.4g} "
                  f"{result['bit_errors']:>15.4g} {ref:>10}")
    sys.stdout.flush()
    return 0
