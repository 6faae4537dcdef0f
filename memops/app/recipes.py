"""Recipes: how `memops train` builds, feeds, scores and checkpoints the model of each task family.

    ntm tasks  (copy, repeat-copy, associative-recall, ngrams, priority-sort)   NTMRecipe
    nse-recall (the synthetic task of memops.tasks.recall)                      RecallRecipe
    nse-nli    (SNLI-format JSONL files on disk: --data DIR)                     NLIRecipe
    nse-classify (sentence-classification TSV files on disk: --data DIR)       TextClassifyRecipe

A recipe is made from the command-line arguments (`Recipe.create(task, args)`) or, for eval and plot,
from the `recipe` dict a checkpoint stores (`Recipe.restore(task, state)`): everything needed to rebuild
the model and its data (model sizes, task options, the vocabulary) is plain data, so checkpoints load
weights-only. The training loop (memops.train) only calls the methods of the base class below.
"""

import math
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..nn import NTM, NLIClassifier, SequenceClassifier
from .tasks import TASKS as NTM_TASKS
from .tasks import get_task, sequence_cost
from .tasks.recall import Recall

NTM_OPTIONS = ("controller", "controller_size", "controller_layers", "memory_slots", "memory_width",
               "read_heads", "write_heads", "shift_width", "memory_init")


class Recipe:
    """The interface the training loop uses; subclasses fill it in for one family of tasks."""

    train_field = "train_loss"  # the csv column of the mean training loss
    train_unit = "nats"
    eval_fields = ("eval_loss",)  # the csv columns evaluate() fills
    primary = "eval_loss"  # lower is better: picks best.pt and --stop-at
    curve_label = "loss"  # y axis of the learning curve
    log_curve = False

    def __init__(self, task, state):
        self.task_name, self.state = task, state

    @classmethod
    def create(cls, task, args):
        """From the command line of `memops train`."""
        raise NotImplementedError

    @classmethod
    def restore(cls, task, state):
        """From the `recipe` entry of a checkpoint."""
        return cls(task, state)

    def hyper(self, args):
        """Optimiser settings: the command line's, else this family's defaults."""
        raise NotImplementedError

    def optimizer(self, params, hyper):
        raise NotImplementedError

    def build(self, backend=None):
        raise NotImplementedError

    def sample(self, batch_size, generator):
        """One training batch (CPU tensors), every random choice drawn from `generator`."""
        raise NotImplementedError

    def loss(self, model, batch, device):
        """(loss tensor to minimise, its value in the unit of train_field)."""
        raise NotImplementedError

    def eval_batches(self, sequences, seed, **overrides):
        """The fixed evaluation set (the same for every run with this seed): `sequences` of them, or
        the recipe's default for None (256 drawn sequences; a whole dev file)."""
        raise NotImplementedError

    def evaluate(self, model, batches, device):
        """{field: value} for eval_fields, over `batches`."""
        raise NotImplementedError

    def count(self, batch):
        """How many sequences (examples) `batch` holds."""
        return int(batch.labels.numel())

    def shard(self, batch, start, stop):
        """Sequences start..stop-1 of `batch` (batch-first fields; time-major recipes override)."""
        return type(batch)(*(t[start:stop] for t in batch))

    def describe(self):
        return self.task_name

    def eval_details(self):
        """More about the last evaluate() for `memops eval` ({name: value}; babi: task, questions, errors)."""
        return {}

    def summary(self, result):
        """A few words on an evaluation, for the progress line."""
        return ", ".join(f"{k[5:]} {v:.4g}" for k, v in result.items() if v is not None)


def _classify_eval(model, batches, device, forward):
    """Mean cross-entropy (nats) and accuracy of a classifier over batches."""
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for batch in batches:
            logits = forward(model, batch, device)
            labels = batch.labels.to(device)
            total_loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += int((logits.argmax(-1) == labels).sum())
            count += labels.numel()
    return {"eval_loss": total_loss / max(count, 1), "eval_accuracy": correct / max(count, 1)}


# --------------------------------------------------------------------------------------------- NTM

class NTMRecipe(Recipe):
    """The NTM on a paper task: BCE summed per sequence (in bits), RMSProp with momentum, value clipping."""

    train_field = "train_bits"
    train_unit = "bits/seq"
    eval_fields = ("eval_bits", "eval_bit_errors", "reference_bits")
    primary = "eval_bits"
    curve_label = "cost (bits per sequence)"
    log_curve = True

    def __init__(self, task, state):
        super().__init__(task, state)
        self.task = get_task(task)
        self.options = state["task_options"]
        self.task.sample(1, generator=torch.Generator().manual_seed(0), **self.options)  # bad options fail now

    @classmethod
    def create(cls, task, args):
        paper = get_task(task).paper
        config = {k: v for k, v in paper.items() if k in NTM_OPTIONS}
        config.setdefault("memory_init", "constant")
        for key in NTM_OPTIONS:
            if getattr(args, key, None) is not None:
                config[key] = getattr(args, key)
        return cls(task, {"model": config, "task_options": dict(args.task_options)})

    def hyper(self, args):
        return {"optimizer": "rmsprop", "lr": args.lr if args.lr is not None else self.task.paper["lr"],
                "momentum": args.momentum, "decay": args.decay, "clip": args.clip}

    def optimizer(self, params, hyper):
        return torch.optim.RMSprop(params, lr=hyper["lr"], alpha=hyper["decay"], momentum=hyper["momentum"])

    def build(self, backend=None):
        return NTM(self.task.input_size, self.task.output_size, backend=backend, **self.state["model"])

    def describe(self):
        return self.task.describe() + (f" (options {self.options})" if self.options else "")

    def sample(self, batch_size, generator):
        return self.task.sample(batch_size, generator=generator, **self.options)

    def loss(self, model, batch, device):
        batch = type(batch)(*(t.to(device) for t in batch))
        logits, _ = model(batch.inputs)
        loss = bce_cost(logits, batch)
        return loss, loss.item() / math.log(2)

    def eval_batches(self, sequences, seed, **overrides):
        options = merge_task_options(self.task, self.options, overrides)
        sequences = sequences or 256
        generator = torch.Generator().manual_seed(10_000 + seed)
        return [self.task.sample(min(64, sequences - i), generator=generator, **options)
                for i in range(0, sequences, 64)]

    def evaluate(self, model, batches, device):
        totals, count, reference = {"bits": 0.0, "bit_errors": 0.0}, 0, 0.0
        with torch.no_grad():
            for batch in batches:
                n = batch.inputs.shape[1]
                logits, _ = model(batch.inputs.to(device))
                cost = sequence_cost(logits.float().cpu(), batch)
                totals["bits"] += cost["bits"] * n
                totals["bit_errors"] += cost["bit_errors"] * n
                ref = self.task.reference_cost(batch)
                reference = None if ref is None or reference is None else reference + ref * n
                count += n
        count = max(count, 1)
        return {"eval_bits": totals["bits"] / count, "eval_bit_errors": totals["bit_errors"] / count,
                "reference_bits": None if reference is None else reference / count}

    def count(self, batch):
        return int(batch.inputs.shape[1])

    def shard(self, batch, start, stop):
        return type(batch)(*(t[:, start:stop] for t in batch))  # time-major: (T, B, ...)

    def summary(self, r):
        text = f"eval {r['eval_bits']:.3g} bits/seq, {r['eval_bit_errors']:.3g} bit errors"
        return text + (f" (optimal {r['reference_bits']:.3g})" if r["reference_bits"] is not None else "")


def bce_cost(logits, batch):
    """Binary cross-entropy of the scored outputs, summed per sequence, mean over the batch (nats)."""
    per_bit = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")
    return (per_bit * batch.mask[..., None]).sum() / batch.mask.shape[1]


def merge_task_options(task, base, overrides):
    """`base` task options updated by `overrides`, where a shorthand in `overrides` (length=L) replaces
    the settings it stands for in `base` (min_length, max_length)."""
    merged = dict(base)
    for short, covered in getattr(task, "ranges", {}).items():
        if short in overrides:
            for key in covered:
                merged.pop(key, None)
    if "length" in overrides:  # tasks whose length is a range without a `ranges` table
        merged.pop("min_length", None)
        merged.pop("max_length", None)
    merged.update(overrides)
    return merged


# ------------------------------------------------------------------------------- NSE classifiers

def lstm_size_matching(params, vocab_size, embed_size, num_classes, lo=1, hi=4096):
    """The LSTM hidden size whose SequenceClassifier has the parameter count nearest `params`."""

    def count(h):
        return vocab_size * embed_size + 4 * h * (embed_size + h) + 8 * h + h * num_classes + num_classes

    return min(range(lo, hi + 1), key=lambda h: abs(count(h) - params))


class ClassifierRecipe(Recipe):
    """What the classification recipes share: cross-entropy, Adam, loss and accuracy on the eval set.
    Subclasses give `_forward(model, batch, device) -> logits` and their batches a `labels` field."""

    eval_fields = ("eval_loss", "eval_accuracy")
    curve_label = "cross-entropy (nats)"
    eval_name = "eval"  # how the progress line names the evaluation set

    @staticmethod
    def _forward(model, batch, device):
        raise NotImplementedError

    def optimizer(self, params, hyper):
        return torch.optim.Adam(params, lr=hyper["lr"])

    def loss(self, model, batch, device):
        loss = F.cross_entropy(self._forward(model, batch, device), batch.labels.to(device))
        return loss, loss.item()

    def evaluate(self, model, batches, device):
        return _classify_eval(model, batches, device, self._forward)

    def summary(self, r):
        return f"{self.eval_name} loss {r['eval_loss']:.3g}, accuracy {r['eval_accuracy']:.3f}"


class RecallRecipe(ClassifierRecipe):
    """NSE (or, with --model lstm, an LSTM of about the same parameter count) on nse-recall."""

    def __init__(self, task, state):
        super().__init__(task, state)
        self.task = Recall(**state["task_options"])

    @classmethod
    def create(cls, task, args):
        recall = Recall(**args.task_options)
        hidden = args.hidden_size or 64
        model = {"encoder": args.model or "nse", "vocab_size": recall.vocab_size, "num_classes": recall.num_classes,
                 "embed_size": hidden, "hidden_size": hidden, "dropout": args.dropout}
        if model["encoder"] == "lstm" and not args.hidden_size:  # same budget as the default NSE
            nse = SequenceClassifier("nse", recall.vocab_size, hidden, recall.num_classes)
            model["hidden_size"] = lstm_size_matching(sum(p.numel() for p in nse.parameters()), recall.vocab_size,
                                                      hidden, recall.num_classes)
        return cls(task, {"model": model, "task_options": dict(args.task_options)})

    def hyper(self, args):
        return {"optimizer": "adam", "lr": args.lr if args.lr is not None else 3e-3, "clip": args.clip}

    def build(self, backend=None):
        return SequenceClassifier(backend=backend, **self.state["model"])

    def describe(self):
        return self.task.describe()

    def sample(self, batch_size, generator):
        return self.task.sample(batch_size, generator=generator)

    @staticmethod
    def _forward(model, batch, device):
        return model(batch.ids.to(device), batch.lengths.to(device))

    def eval_batches(self, sequences, seed, **overrides):
        task = Recall(**dict(self.task.defaults, **overrides)) if overrides else self.task
        sequences = sequences or 256
        generator = torch.Generator().manual_seed(10_000 + seed)
        return [task.sample(min(64, sequences - i), generator=generator) for i in range(0, sequences, 64)]


# --------------------------------------------------------------------------------------------- NLI

class NLIBatch(NamedTuple):
    p_ids: torch.Tensor  # (B, Tp) premise token ids, 0-padded
    p_len: torch.Tensor  # (B,)
    h_ids: torch.Tensor  # (B, Th) hypothesis token ids
    h_len: torch.Tensor  # (B,)
    labels: torch.Tensor  # (B,) 0 entailment, 1 neutral, 2 contradiction


def _find(directory, split, ext):
    """The one *<split>*.<ext> file in `directory` (split: train / dev)."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(ext) and split in n)
    if len(names) != 1:
        raise FileNotFoundError(f"memops: expected one *{split}*{ext} file in {directory}, found {names or 'none'}")
    return os.path.join(directory, names[0])


class TextRecipe(ClassifierRecipe):
    """What the recipes on text files share: --data DIR with a train and a dev file, a vocabulary
    built from the training file (kept in the checkpoint as a list of words), optional GloVe vectors
    for the embedding, minibatches drawn at random from the training examples, cross-entropy + Adam."""

    eval_name = "dev"
    extension = ""  # the data files' extension
    default_hidden = 300

    def __init__(self, task, state):
        super().__init__(task, state)
        from .data import Vocab

        self.vocab = Vocab.from_list(state["vocab"])
        self.train_set = None

    # -- for subclasses
    def load(self, path):
        """The examples of a data file."""
        raise NotImplementedError

    @staticmethod
    def tokens(example):
        """The token lists of an example (for the vocabulary)."""
        raise NotImplementedError

    def model_config(self, args, train_set):
        raise NotImplementedError

    def model_class(self):
        raise NotImplementedError

    def collate(self, examples):
        raise NotImplementedError

    # -- shared
    @classmethod
    def create(cls, task, args):
        from .data import Vocab

        if not args.data:
            raise ValueError(f"memops train {task}: --data DIR is required (a directory with one "
                             f"*train*{cls.extension} and one *dev*{cls.extension} file)")
        train_path, dev_path = _find(args.data, "train", cls.extension), _find(args.data, "dev", cls.extension)
        recipe = cls(task, {"vocab": [Vocab.PAD, Vocab.UNK], "train": os.path.abspath(train_path), "dev": os.path.abspath(dev_path),
                            "glove": args.glove})
        examples = recipe.load(train_path)
        if not examples:
            raise ValueError(f"memops train {task}: the training file {train_path} has no examples")
        recipe.vocab = Vocab.build([t for e in examples for t in cls.tokens(e)], min_freq=1, max_size=args.vocab_size)
        recipe.state["vocab"] = recipe.vocab.to_list()
        recipe.train_set = examples
        recipe.state["model"] = dict(recipe.model_config(args, examples), vocab_size=len(recipe.vocab),
                                     hidden_size=args.hidden_size or cls.default_hidden,
                                     embed_size=args.embed_size or 300, encoder=args.model or "nse",
                                     dropout=args.dropout)
        return recipe

    def hyper(self, args):
        return {"optimizer": "adam", "lr": args.lr if args.lr is not None else 3e-4, "clip": args.clip}

    def build(self, backend=None):
        model = self.model_class()(backend=backend, **self.state["model"])
        if self.state.get("glove") and self.train_set is not None:  # at the start of training only
            from .data import load_glove

            vectors, found = load_glove(self.state["glove"], self.vocab, dim=self.state["model"]["embed_size"])
            with torch.no_grad():
                model.embedding.weight.copy_(vectors)
            print(f"memops: {found} of {len(self.vocab)} words found in {self.state['glove']}")
        return model

    def describe(self):
        return (f"{self.task_name}: {self.state['train']} ({len(self.vocab)} words in the vocabulary), "
                f"dev {self.state['dev']}")

    def sample(self, batch_size, generator):
        if self.train_set is None:
            self.train_set = self.load(self.state["train"])
        picks = torch.randint(0, len(self.train_set), (batch_size,), generator=generator).tolist()
        return self.collate([self.train_set[i] for i in picks])

    def eval_batches(self, sequences, seed, **overrides):
        unknown = set(overrides) - {"data"}
        if unknown:
            raise TypeError(f"{self.task_name}: unexpected keyword argument '{sorted(unknown)[0]}' "
                            f"(known: data, a file to evaluate on)")
        path = overrides.get("data", self.state["dev"])
        dev = self.load(path)[:sequences]
        if not dev:
            raise ValueError(f"memops: the evaluation file {path} has no examples")
        return [self.collate(dev[i:i + 64]) for i in range(0, len(dev), 64)]


class NLIRecipe(TextRecipe):
    """NSE (an MMA-NSE hypothesis encoder over the premise's memory) or an LSTM baseline on
    SNLI-format JSONL files (--data DIR with one *train*.jsonl and one *dev*.jsonl)."""

    extension = ".jsonl"

    def load(self, path):
        from .data import load_nli_jsonl

        return load_nli_jsonl(path)

    @staticmethod
    def tokens(example):
        return (example.premise, example.hypothesis)

    def model_config(self, args, train_set):
        return {}

    def model_class(self):
        return NLIClassifier

    def collate(self, examples):
        from .data import pad_batch_ids

        p_ids, p_len = pad_batch_ids([self.vocab.encode(e.premise) for e in examples])
        h_ids, h_len = pad_batch_ids([self.vocab.encode(e.hypothesis) for e in examples])
        return NLIBatch(p_ids, p_len, h_ids, h_len, torch.tensor([e.label for e in examples]))

    @staticmethod
    def _forward(model, batch, device):
        return model(*(t.to(device) for t in batch[:4]))


class TextClassifyRecipe(TextRecipe):
    """NSE or an LSTM baseline on sentence classification (SST / GLUE style TSV: text<TAB>label, with
    or without a header; --data DIR with one *train*.tsv and one *dev*.tsv). Label ids follow the
    training file's labels (sorted), kept in the checkpoint."""

    extension = ".tsv"

    def load(self, path):
        from .data import load_tsv

        examples, names = load_tsv(path, label_names=self.state.get("labels"))
        self.state.setdefault("labels", names)
        return examples

    @staticmethod
    def tokens(example):
        return (example.tokens,)

    def model_config(self, args, train_set):
        return {"num_classes": len(self.state["labels"])}

    def model_class(self):
        return SequenceClassifier

    def collate(self, examples):
        from .data import pad_batch_ids
        from .tasks.recall import TokenBatch

        ids, lengths = pad_batch_ids([self.vocab.encode(e.tokens) for e in examples])
        return TokenBatch(ids, lengths, torch.tensor([e.label for e in examples]))

    @staticmethod
    def _forward(model, batch, device):
        return model(batch.ids.to(device), batch.lengths.to(device))


# A "module:Class" entry is imported when first asked for (memops.app.babi subclasses Recipe: importing
# it from here at load time would be an import cycle).
RECIPES = {**{name: NTMRecipe for name in NTM_TASKS}, "nse-recall": RecallRecipe, "nse-nli": NLIRecipe,
           "nse-classify": TextClassifyRecipe, "babi": "memops.app.babi:BabiRecipe"}


def recipe_class(task):
    try:
        cls = RECIPES[task]
    except KeyError:
        raise ValueError(f"memops: unknown task {task!r}; tasks: {', '.join(sorted(RECIPES))}") from None
    if isinstance(cls, str):
        import importlib

        module, _, name = cls.partition(":")
        cls = RECIPES[task] = getattr(importlib.import_module(module), name)
    return cls
