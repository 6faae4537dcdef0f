"""memops plot CHECKPOINT: one sequence through a trained model, as a PNG.

    memops plot runs/copy/best.pt --length 20 --out copy.png
    memops plot runs/recall/best.pt

NTM checkpoints: panels, each over time (x axis): the input; the target and the model's output
(sigmoid of its logits; unscored steps are greyed out); the write weighting and the read weighting of
one head over the memory slots; and the final memory contents (slots x width).
NSE checkpoints of nse-recall: the attention (the read and write weighting) of every step over the
memory's slots, one per token, and the predicted distribution over the answers.
bAbI checkpoints (--data FILE --question N): MemN2N's attention of every hop over the story's
sentences; DMN+'s gates of every pass over the facts.
Default output: next to the checkpoint, as plot.png.
"""

import os

from .checkpoints import model_from_checkpoint
from .train import add_run_arguments, parse_task_options, positive_int

HELP = "draw one sequence through a trained model: NTM weightings and memory, NSE attention (PNG)"


def add_arguments(parser):
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default=None, help="PNG path (default: plot.png beside the checkpoint)")
    parser.add_argument("--length", type=positive_int, default=None, help="the task's `length` setting for the sample")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sample (default: 1)")
    parser.add_argument("--head", type=int, default=0, help="which read / write head to show (default: 0)")
    parser.add_argument("--task-option", action="append", metavar="NAME=VALUE", help="override a task setting")
    parser.add_argument("--data", default=None, help="babi: a bAbI file to take the story from (default: the "
                                                      "run's validation questions)")
    parser.add_argument("--question", type=int, default=0, help="babi: which question of --data (default: 0)")
    add_run_arguments(parser)


def draw(model, batch, path, title, head=0):
    """Write the picture of the first sequence of `batch` to `path`; False if matplotlib is missing."""
    import torch

    from .plotting import pyplot, save

    plt = pyplot()
    if plt is None:
        return False
    with torch.no_grad():
        logits, state, trace = model(batch.inputs[:, :1].to(next(model.parameters()).device), return_trace=True)
    mask = batch.mask[:, 0]
    T = int(mask.nonzero().max()) + 1 if mask.any() else batch.inputs.shape[0]  # drop padding after the end
    inputs = batch.inputs[:T, 0].T
    target = batch.targets[:T, 0].T
    output = torch.sigmoid(logits[:T, 0].float().cpu()).T
    unscored = ~mask[:T]
    target = torch.where(unscored[None, :], torch.nan, target)
    output = torch.where(unscored[None, :], torch.nan, output)
    # a head index past one kind's count shows that kind's last head, and says so
    write_head, read_head = min(head, trace.write_weights.shape[2] - 1), min(head, trace.read_weights.shape[2] - 1)
    write_w = trace.write_weights[:T, 0, write_head].float().cpu().T
    read_w = trace.read_weights[:T, 0, read_head].float().cpu().T
    memory = state.memory[0].float().cpu()

    panels = [("input", inputs, "Greys"), ("target", target, "Greys"), ("output", output, "Greys"),
              (f"write weighting (head {write_head})", write_w, "viridis"),
              (f"read weighting (head {read_head})", read_w, "viridis")]
    heights = [max(p[1].shape[0], 4) for p in panels[:3]] + [40, 40, 40]
    fig, axes = plt.subplots(6, 1, figsize=(9, 13), dpi=90, gridspec_kw={"height_ratios": heights})
    for ax, (name, data, cmap) in zip(axes, panels):
        cm = plt.get_cmap(cmap).with_extremes(bad="#f3d9c4")  # unscored steps
        ax.imshow(data.numpy(), aspect="auto", interpolation="nearest", cmap=cm, vmin=0, vmax=1)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.set_xticks([])
    axes[4].set_xlabel("time step")
    axes[4].set_xticks(range(0, T, max(1, T // 10)))
    im = axes[5].imshow(memory.T.numpy(), aspect="auto", interpolation="nearest", cmap="RdBu_r")
    axes[5].set_ylabel("final memory\n(width x slot)", rotation=0, ha="right", va="center")
    axes[5].set_xlabel("memory slot")
    fig.colorbar(im, ax=axes[5], fraction=0.03, pad=0.01)
    fig.suptitle(title)
    save(fig, path)
    return True


def draw_nse_recall(model, task, batch, path, title):
    """The NSE's attention over its slots at every step of the first sequence of `batch`, and its answer."""
    import torch

    from .plotting import pyplot, save

    plt = pyplot()
    if plt is None:
        return False
    n = int(batch.lengths[0])
    ids = batch.ids[:1, :n]
    K, V = task.defaults["keys"], task.defaults["values"]

    def label(t):
        if t == 1:
            return "?"
        if t >= 2 + K * V:
            return f"q{t - 2 - K * V}"
        k, v = divmod(t - 2, V)
        return f"{k}:{v}"

    with torch.no_grad():
        out = model.encoder(model.embedding(ids), batch.lengths[:1], return_attention=True)
        probs = torch.softmax(model.out(out.pooled), -1)[0]
    z = out.attention[0][0].T  # (slot, step)
    names = [label(t) for t in ids[0].tolist()]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(max(6, n * 0.4), 8), dpi=90, gridspec_kw={"height_ratios": [3, 1]})
    im = ax.imshow(z.numpy(), aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("step (token read: key:value, ? marker, q query)")
    ax.set_ylabel("memory slot")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    answer = int(batch.labels[0])
    bx.bar(range(V), probs.numpy(), color=["tab:green" if v == answer else "tab:gray" for v in range(V)])
    bx.set_xticks(range(V))
    bx.set_xlabel(f"value (green: the right answer, {answer})")
    bx.set_ylabel("p(value)")
    bx.set_ylim(0, 1)
    fig.suptitle(title)
    save(fig, path)
    return True


def run(args):
    import sys

    import torch

    from .recipes import NTMRecipe, RecallRecipe, merge_task_options

    if args.threads:
        torch.set_num_threads(args.threads)
    model, recipe, ckpt = model_from_checkpoint(args.checkpoint, args.device, args.backend)
    path = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "plot.png")
    overrides = parse_task_options(args.task_option)
    if args.length is not None:
        overrides["length"] = args.length
    generator = torch.Generator().manual_seed(args.seed)
    suffix = f", step {ckpt['step']}" + (f", length {args.length}" if args.length else "")
    if ckpt["task"] == "babi" and recipe.state["kind"] in ("memn2n", "dmn"):
        from .babi import draw_attention, draw_gates

        examples = recipe.eval_examples(**({"data": args.data} if args.data else {}))
        if not 0 <= args.question < len(examples):
            print(f"memops plot: --question {args.question}: there are {len(examples)} questions (0 to "
                  f"{len(examples) - 1})", file=sys.stderr)
            return 2
        dmn = recipe.state["kind"] == "dmn"
        drawn = (draw_gates if dmn else draw_attention)(
            model.cpu(), recipe, examples[args.question], path,
            f"{'DMN+' if dmn else 'MemN2N'}, bAbI task {examples[args.question].task}{suffix}")
    elif isinstance(recipe, RecallRecipe) and recipe.state["model"]["encoder"] == "nse":
        batch = recipe.eval_batches(1, args.seed, **overrides)[0]
        drawn = draw_nse_recall(model.cpu(), recipe.task, batch, path, f"NSE on {ckpt['task']}{suffix}")
    elif isinstance(recipe, NTMRecipe):
        cell = model.cell
        heads = max(cell.read_heads, cell.write_heads)
        if not 0 <= args.head < heads:
            print(f"memops plot: --head {args.head}: the model has {cell.read_heads} read and "
                  f"{cell.write_heads} write heads (--head 0 to {heads - 1})", file=sys.stderr)
            return 2
        task = recipe.task
        batch = task.sample(1, generator=generator, **merge_task_options(task, recipe.options, overrides))
        drawn = draw(model, batch, path, f"NTM on {task.name}{suffix}", args.head)
    else:
        print(f"memops plot: draws NTM checkpoints, NSE checkpoints of nse-recall and MemN2N / DMN+ checkpoints "
              f"of babi; {args.checkpoint} is a "
              f"{recipe.state['model'].get('encoder', '')} model of {ckpt['task']}", file=sys.stderr)
        return 2
    if not drawn:
        return 2
    print(path)
    return 0
