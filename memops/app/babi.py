"""The bAbI recipe: `memops train babi --model memn2n|memnn|dmn --task N|all --data DIR [--size 1k|10k]`.

MemN2N defaults are the MemN2N paper's (Sukhbaatar et al. 2015, section 4.2): SGD, lr 0.01 halved every
25 epochs to 100 epochs, gradient-norm clipping to 40, batch 32, d = 20 (single task) or 50 (--task
all), 3 hops, position encoding, temporal encoding, adjacent tying, linear start and random noise. The
position encoding's weights are those of the paper's released code, twice the formula printed in the
paper (--pe-form paper: the printed one, which leaves task 16 at 44-49% and task 4 at 14-17%
validation error; see memops.nn.memn2n.position_encoding).
An epoch is len(train) / batch steps (batches are drawn at random); the model is evaluated on the
held-out 10% of the training file(s) once an epoch, and best.pt is the epoch with the lowest
validation error. Linear start, as the paper's code: the first 20 epochs without the hops' softmax at
lr 0.005, then the softmax back and the 100 epochs above (120 in all; --ls-epochs 0 or
--no-linear-start: 100). The loss is the cross-entropy summed over the batch, as in that code.

DMN+ (--model dmn; Xiong, Merity & Socher 2016, section 4.1): D = 80 (--embed-size), 3 passes
(--hops), GRU attention (--attention soft: the paper's soft-attention ablation), dropout 0.1 on the
fused facts (--dropout), the 50 most recent statements (--memory-size), as MemN2N sees; Adam, lr 0.001,
batch 100, no clipping, and the paper's L2 regularisation as Adam's weight_decay (--weight-decay,
default 0.001: an L2 term added to the gradient of every parameter, embeddings and biases included;
the paper names no value). The loss is the mean cross-entropy over the batch: Adam's step does not
depend on its scale, but the L2 term's weight relative to it does, and 0.001 is meant against a mean.
On the 10k set this L2 holds task 17 at 36-40% validation error from the 5th epoch on and task 18 at
8-10% from the 9th; with --weight-decay 0 they reach 0.8% and 0.1% (one seed each; the runs and the
other tasks: examples/checkpoints/dmn10k/RESULTS.md). 100 epochs (--epochs; the paper stops early
within 256), the best by validation error kept as best.pt as for MemN2N.
"""

import math
import os

import torch
import torch.nn.functional as F

from ..nn import DMN, MemN2N, MemNN
from .data.babi import BabiBatch, BabiVocab, encode, load_babi_task, read_babi, split_validation
from .recipes import Recipe


def add_arguments(parser):
    g = parser.add_argument_group("babi (MemN2N / MemNN / DMN+ on the bAbI tasks)")
    g.add_argument("--task", dest="babi_task", default=None, metavar="N|all",
                   help="bAbI task 1..20, or all (joint training); default 1")
    g.add_argument("--size", choices=["1k", "10k"], default=None,
                   help="with --data holding en/ and en-10k/: which training set (default: the files in DIR)")
    g.add_argument("--hops", type=int, default=None, help="MemN2N hops, DMN+ passes (default 3)")
    g.add_argument("--attention", choices=["gru", "soft"], default=None,
                   help="DMN+ episode: the attention GRU (default) or the soft-attention sum of the facts")
    g.add_argument("--encoding", choices=["bow", "position"], default=None, help="default: position")
    g.add_argument("--pe-form", choices=["code", "paper"], default=None,
                   help="MemN2N position-encoding weights: the paper's released code's (default) or the "
                        "formula printed in the paper (half as large; memops.nn.memn2n.position_encoding)")
    g.add_argument("--tying", choices=["adjacent", "layer-wise"], default=None, help="default: adjacent")
    g.add_argument("--no-temporal", action="store_true", help="MemN2N without temporal encoding")
    g.add_argument("--no-linear-start", action="store_true", help="MemN2N without linear start")
    g.add_argument("--random-noise", type=float, default=None, help="fraction of empty memories (default 0.1)")
    g.add_argument("--epochs", type=int, default=None, help="default 100, after linear start (sets --steps)")
    g.add_argument("--ls-epochs", type=int, default=None, help="epochs of linear start (default 20)")
    g.add_argument("--memory-size", type=int, default=None, help="the most recent sentences kept (default 50)")


class ScheduledSGD(torch.optim.SGD):
    """SGD with the MemN2N schedule: gradients clipped to norm `max_norm`; for the first `ls_steps`
    steps (linear start) lr = ls_lr, then lr = base_lr / 2^(steps since // halve_every). The step
    count is a param-group entry, so it is in state_dict and survives --resume."""

    def __init__(self, params, lr, halve_every, max_norm, ls_steps=0, ls_lr=None):
        super().__init__(params, lr=lr)
        for group in self.param_groups:
            group.update(base_lr=lr, halve_every=int(halve_every), max_norm=float(max_norm), done=0,
                         ls_steps=int(ls_steps), ls_lr=lr if ls_lr is None else ls_lr)

    @property
    def steps_done(self):
        return self.param_groups[0]["done"]

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if group["max_norm"] > 0:
                torch.nn.utils.clip_grad_norm_([p for p in group["params"] if p.grad is not None], group["max_norm"])
            after = group["done"] - group["ls_steps"]
            group["lr"] = group["ls_lr"] if after < 0 else group["base_lr"] * 0.5 ** (after // group["halve_every"])
            group["done"] += 1
        return super().step(closure)


class BabiRecipe(Recipe):
    """MemN2N or DMN+ (weakly supervised: answers only), or MemNN (strongly supervised: supporting facts
    too)."""

    eval_fields = ("eval_loss", "eval_error")
    primary = "eval_error"
    curve_label = "loss (nats)"

    def __init__(self, task, state):
        super().__init__(task, state)
        self.vocab = BabiVocab.from_dict(state["vocab"])
        self.train_set = None
        self.eval_task = state["task"]

    @classmethod
    def create(cls, task, args):
        if not args.data:
            raise ValueError("memops train babi: --data DIR is required (a directory of bAbI "
                             "qa<N>_*_train.txt files, or one holding en/ and en-10k/ with --size)")
        babi_task = args.babi_task or "1"
        if babi_task != "all":
            if not babi_task.isdigit() or not 1 <= int(babi_task) <= 20:
                raise ValueError(f"memops train babi: --task must be 1..20 or all, got {babi_task!r}")
            babi_task = int(babi_task)
        train, valid = load_babi_task(args.data, babi_task, args.size)
        if not train or not valid:
            raise ValueError(f"memops train babi: task {babi_task} in {args.data} has too few questions")
        vocab = BabiVocab.build(train + valid)
        kind = args.model or "memn2n"
        if kind not in ("memn2n", "memnn", "dmn"):
            raise ValueError(f"memops train babi: --model must be memn2n, memnn or dmn, got {kind!r}")
        given = getattr(args, "_given", set())
        memory_size = args.memory_size or 50
        model = {"vocab_size": len(vocab.words), "num_answers": len(vocab.answers)}
        if kind == "dmn":
            model.update(embed_size=args.embed_size or 80, passes=args.hops or 3, attention=args.attention or "gru",
                         dropout=args.dropout if "dropout" in given else 0.1)
        else:
            model.update(embed_size=args.embed_size or (50 if babi_task == "all" else 20), memory_size=memory_size)
        if kind == "memn2n":
            model.update(answer_words=[vocab.words.encode(a.split(",")) for a in vocab.answers])
            model.update(hops=args.hops or 3, encoding=args.encoding or "position",
                         pe_form=getattr(args, "pe_form", None) or "code", temporal=not args.no_temporal,
                         tying=args.tying or "adjacent", linear_start=not args.no_linear_start,
                         random_noise=0.1 if args.random_noise is None else args.random_noise)
        # the paper's schedule, in steps: 100 epochs of len(train) / batch questions
        if "batch_size" not in given:
            args.batch_size = 100 if kind == "dmn" else 32
        epoch = math.ceil(len(train) / args.batch_size)
        ls_epochs = 0 if kind != "memn2n" or not model["linear_start"] else (
            20 if args.ls_epochs is None else args.ls_epochs)
        if kind == "memn2n" and ls_epochs == 0:
            model["linear_start"] = False
        if "steps" not in given:
            args.steps = (ls_epochs + (args.epochs or 100)) * epoch
        if "eval_every" not in given:
            args.eval_every = epoch
        if "clip" not in given:
            args.clip = 0.0  # MemN2N clips the gradient's norm (ScheduledSGD), DMN+ not at all
        state = {"kind": kind, "model": model, "vocab": vocab.to_dict(), "data": os.path.abspath(args.data),
                 "task": babi_task, "size": args.size, "epoch_steps": epoch,
                 "ls_epochs": ls_epochs, "memory_size": memory_size}
        recipe = cls(task, state)
        recipe.train_set = train
        return recipe

    # -- model and optimiser
    def hyper(self, args):
        if self.state["kind"] == "dmn":
            return {"optimizer": "adam", "lr": args.lr if args.lr is not None else 0.001,
                    "weight_decay": 0.001 if args.weight_decay is None else args.weight_decay, "clip": args.clip}
        lr = args.lr if args.lr is not None else 0.01
        return {"optimizer": "sgd", "lr": lr, "clip": args.clip, "max_norm": 40.0,
                "halve_every": 25 * self.state["epoch_steps"],
                "ls_steps": self.state["ls_epochs"] * self.state["epoch_steps"], "ls_lr": lr / 2}

    def optimizer(self, params, hyper):
        if hyper["optimizer"] == "adam":
            self._optimizer = torch.optim.Adam(params, lr=hyper["lr"], weight_decay=hyper["weight_decay"])
        else:
            self._optimizer = ScheduledSGD(params, hyper["lr"], hyper["halve_every"], hyper["max_norm"],
                                           hyper.get("ls_steps", 0), hyper.get("ls_lr"))
        return self._optimizer

    def build(self, backend=None):
        model = {"memn2n": MemN2N, "memnn": MemNN, "dmn": DMN}[self.state["kind"]]
        options = dict(self.state["model"])
        if self.state["kind"] == "memn2n":
            options.setdefault("pe_form", "paper")  # checkpoints from before pe_form: the printed formula
        return model(**options, backend=backend)

    @property
    def memory_size(self):
        """The most recent statements of a story a question sees (older checkpoints: in the model's options)."""
        return self.state.get("memory_size") or self.state["model"]["memory_size"]

    def describe(self):
        s = self.state
        return (f"babi task {s['task']} ({s['kind']}): {s['data']}{' ' + s['size'] if s['size'] else ''}, "
                f"{len(self.vocab.words)} words, {len(self.vocab.answers)} answers")

    # -- data
    def _train_set(self):
        if self.train_set is None:
            s = self.state
            self.train_set, _ = load_babi_task(s["data"], s["task"], s["size"])
        return self.train_set

    def _encode(self, examples):
        return encode(examples, self.vocab, memory_size=self.memory_size)

    def sample(self, batch_size, generator):
        train = self._train_set()
        picks = torch.randint(0, len(train), (batch_size,), generator=generator).tolist()
        return self._encode([train[i] for i in picks])

    def eval_batches(self, sequences, seed, **overrides):
        """The held-out 10% of the training file(s); data=FILE: that file's held-out 10% if it is a
        *_train.txt file (split=all: every question), else every question of it."""
        examples = self.eval_examples(**overrides)
        examples = examples[:sequences] if sequences else examples
        if not examples:
            raise ValueError("memops: no bAbI questions to evaluate")
        return [self._encode(examples[i:i + 256]) for i in range(0, len(examples), 256)]

    def eval_examples(self, **overrides):
        """The BabiExamples eval_batches encodes (same options)."""
        unknown = set(overrides) - {"data", "split"}
        if unknown:
            raise TypeError(f"babi: unexpected option '{sorted(unknown)[0]}' (known: data=FILE, split=valid|all)")
        if "data" in overrides:
            path = str(overrides["data"])
            examples = read_babi(path)
            split = overrides.get("split", "valid" if path.endswith("_train.txt") else "all")
            if split not in ("valid", "all"):
                raise ValueError(f"babi: split must be 'valid' or 'all', got {split!r}")
            if split == "valid":
                examples = split_validation(examples)[1]
            self.eval_task = examples[0].task if examples else os.path.basename(path)
        else:
            s = self.state
            _, examples = load_babi_task(s["data"], s["task"], s["size"])
        return examples

    # -- loss and evaluation
    def _end_linear_start_if_due(self, model):
        inner = getattr(model, "module", model)
        optimizer = getattr(self, "_optimizer", None)
        if getattr(inner, "linear_start", False) and optimizer is not None \
                and optimizer.steps_done >= optimizer.param_groups[0]["ls_steps"]:
            inner.end_linear_start()

    def loss(self, model, batch, device):
        self._end_linear_start_if_due(model)
        batch = BabiBatch(*(t.to(device) for t in batch))
        inner = getattr(model, "module", model)
        if self.state["kind"] == "memnn":
            loss = inner.loss(batch.story, batch.question, batch.supports, batch.labels) * len(batch.labels)
        else:  # MemN2N: summed over the batch, as the paper's code (lr 0.01 is a step size for the sum)
            loss = F.cross_entropy(model(batch.story, batch.question), batch.labels, ignore_index=-1,
                                   reduction="mean" if self.state["kind"] == "dmn" else "sum")
        per_question = loss.item() if self.state["kind"] == "dmn" else loss.item() / max(len(batch.labels), 1)
        return loss, per_question

    def evaluate(self, model, batches, device):
        total, errors, count = 0.0, 0, 0
        with torch.no_grad():
            for batch in batches:
                batch = BabiBatch(*(t.to(device) for t in batch))
                logits = model(batch.story, batch.question).float()
                known = batch.labels >= 0
                if known.any():
                    total += F.cross_entropy(logits[known], batch.labels[known], reduction="sum").item()
                errors += int((logits.argmax(-1) != batch.labels).sum())
                count += batch.labels.numel()
        result = {"eval_loss": total / max(count, 1), "eval_error": errors / max(count, 1)}
        self.last_counts = {"questions": count, "errors": errors}
        return result

    def eval_details(self):
        counts = getattr(self, "last_counts", {"questions": 0, "errors": 0})
        return {"task": self.eval_task, **counts, "error_rate": counts["errors"] / max(counts["questions"], 1)}

    def count(self, batch):
        return int(batch.labels.numel())

    def summary(self, r):
        return f"valid loss {r['eval_loss']:.3g}, error {100 * r['eval_error']:.1f}%"


def _one_question(model, recipe, example):
    """One question through the model: (logits, its attention (hops or passes, M) over the M sentences
    it sees, oldest first, those sentences' supporting facts as indices 0..M-1)."""
    batch = recipe._encode([example])
    with torch.no_grad():
        logits, attention = model(batch.story, batch.question, return_attention=True)
    M = min(len(example.story), recipe.memory_size)
    first = len(example.story) - M
    support = {i - first for i in example.supports if i >= first}
    return logits, attention[0, :, :M].flip(-1).float().cpu(), M, support


def draw_attention(model, recipe, example, path, title):
    """The MemN2N paper's picture for one question: the story's sentences (newest at the bottom), the
    attention of every hop over them, the supporting facts marked; False if matplotlib is missing."""
    from .plotting import pyplot, save

    plt = pyplot()
    if plt is None:
        return False
    logits, attention, M, support = _one_question(model, recipe, example)
    att = attention.T  # (sentences oldest first, hops)
    sentences = [" ".join(s) for s in example.story[-M:]]
    answer = recipe.vocab.answers[int(logits.argmax(-1))]
    fig, ax = plt.subplots(figsize=(4 + 0.9 * att.shape[1], 1.2 + 0.32 * M), dpi=90)
    ax.imshow(att.numpy(), aspect="auto", interpolation="nearest", cmap="Blues", vmin=0,
              vmax=max(float(att.max()), 1e-6))
    for i in range(M):
        for h in range(att.shape[1]):
            ax.text(h, i, f"{att[i, h]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(att.shape[1]), [f"hop {h + 1}" for h in range(att.shape[1])])
    ax.set_yticks(range(M), [("* " if i in support else "") + s for i, s in enumerate(sentences)], fontsize=8)
    ax.set_xlabel(f"{' '.join(example.question)}?  answer: {example.answer_text}, predicted: {answer}"
                  + ("" if getattr(model, "linear_start", False) is False else " (linear start: scores)"))
    ax.set_title(title + "  (* supporting fact)", fontsize=9)
    save(fig, path)
    return True


def draw_gates(model, recipe, example, path, title):
    """The DMN+ paper's picture for one question: the episodic memory's gates of every pass (rows) over
    the story's facts (columns, oldest first, the supporting facts starred), the question and the answer
    in the title; False if matplotlib is missing."""
    from .plotting import pyplot, save

    plt = pyplot()
    if plt is None:
        return False
    logits, g, M, support = _one_question(model, recipe, example)  # g (passes, facts oldest first)
    facts = [("* " if i in support else "") + " ".join(s) for i, s in enumerate(example.story[-M:])]
    answer = recipe.vocab.answers[int(logits.argmax(-1))]
    passes = g.shape[0]
    fig, ax = plt.subplots(figsize=(max(6, 2 + 0.42 * M), 2.4 + 0.4 * passes + 0.08 * max(len(f) for f in facts)),
                           dpi=90)
    ax.imshow(g.numpy(), aspect="auto", interpolation="nearest", cmap="Blues", vmin=0,
              vmax=max(float(g.max()), 1e-6))
    for t in range(passes):
        for i in range(M):
            ax.text(i, t, f"{g[t, i]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if g[t, i] > 0.6 * g.max() else "black")
    ax.set_yticks(range(passes), [f"pass {t + 1}" for t in range(passes)])
    ax.set_xticks(range(M), facts, rotation=90, fontsize=8)
    ax.set_title(f"{title}  (* supporting fact)\n{' '.join(example.question)}?  answer: {example.answer_text}, "
                 f"predicted: {answer}", fontsize=9)
    save(fig, path)
    return True
