"""The bAbI question-answering tasks (Weston et al. 2015; v1.2 files, `qa<N>_<name>_<split>.txt`).

    examples = read_babi("en/qa1_single-supporting-fact_train.txt")   # [BabiExample], task 1
    train, valid = split_validation(examples)                        # 90% / 10%, deterministic
    vocab = BabiVocab.build(train)                                   # words and answers
    batch = encode(train[:32], vocab, memory_size=50)                # BabiBatch of padded tensors

A file holds numbered lines; the numbers restart at 1 with each story. A question line is
`N question?<TAB>answer<TAB>supporting line numbers`; answers of tasks 8 and 19 are comma-separated
lists ("football,apple", "n,w"), kept as a tuple of words and predicted as one answer class. Every
question is one example, whose story is the statements before it in its story. Tokens: lowercase
words, the final "." and "?" dropped. Malformed files raise DataFormatError "path:line: what".
"""

from __future__ import annotations

import glob
import os
import random
import re
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch

from .lines import _error, _read_lines
from .text import Vocab

__all__ = ["BabiExample", "BabiVocab", "BabiBatch", "read_babi", "find_babi_file", "load_babi_task",
           "split_validation", "encode", "babi_tokens", "TASK_NAMES"]

TASK_NAMES = {1: "single-supporting-fact", 2: "two-supporting-facts", 3: "three-supporting-facts",
              4: "two-arg-relations", 5: "three-arg-relations", 6: "yes-no-questions", 7: "counting",
              8: "lists-sets", 9: "simple-negation", 10: "indefinite-knowledge", 11: "basic-coreference",
              12: "conjunction", 13: "compound-coreference", 14: "time-reasoning", 15: "basic-deduction",
              16: "basic-induction", 17: "positional-reasoning", 18: "size-reasoning", 19: "path-finding",
              20: "agents-motivations"}

_WORD = re.compile(r"[\w']+")
_NUMBERED = re.compile(r"(\d+) (.*)")


def babi_tokens(text: str) -> List[str]:
    """Lowercase words of a bAbI sentence or question, punctuation dropped."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class BabiExample:
    story: Tuple[Tuple[str, ...], ...]  # the statements before the question, oldest first
    question: Tuple[str, ...]
    answer: Tuple[str, ...]  # one word, or several (tasks 8 and 19)
    supports: Tuple[int, ...]  # indices into story of the supporting facts
    task: int  # 1..20 (0 when the file name does not say)
    line: int = 0  # the question's line in its file

    @property
    def answer_text(self) -> str:
        """The answer class: the words joined by "," as in the file."""
        return ",".join(self.answer)


def _task_of(path) -> int:
    m = re.match(r"qa(\d+)_", os.path.basename(os.fspath(path)))
    return int(m.group(1)) if m else 0


def read_babi(path, task: Optional[int] = None) -> List[BabiExample]:
    """Every question of a bAbI file as a BabiExample; `task` defaults to the N of qaN_ in the name."""
    task = _task_of(path) if task is None else task
    examples: List[BabiExample] = []
    story: List[Tuple[str, ...]] = []
    index_of = {}  # line number in the story -> index into `story` (statements only)
    last = 0
    for lineno, text in _read_lines(path):
        if not text.strip():
            continue
        m = _NUMBERED.fullmatch(text.strip("\n"))
        if not m:
            raise _error(path, lineno, f"expected 'NUMBER text', got {text[:40]!r}")
        number, body = int(m.group(1)), m.group(2)
        if number == 1:
            story, index_of = [], {}
        elif number != last + 1:
            raise _error(path, lineno, f"line number {number} does not follow {last} (a story restarts at 1)")
        last = number
        if "\t" not in body:
            tokens = babi_tokens(body)
            if not tokens:
                raise _error(path, lineno, "empty statement")
            index_of[number] = len(story)
            story.append(tuple(tokens))
            continue
        fields = body.split("\t")
        if len(fields) != 3:
            raise _error(path, lineno, f"a question line needs 3 tab-separated fields (question, answer, "
                                       f"supporting facts), got {len(fields)}")
        question, answer, support_text = fields
        q_tokens = babi_tokens(question)
        answer_words = tuple(a.strip().lower() for a in answer.split(","))
        if not q_tokens:
            raise _error(path, lineno, "empty question")
        if not all(answer_words):
            raise _error(path, lineno, f"empty answer in {answer!r}")
        supports = []
        for s in support_text.split():
            if not s.isdigit() or int(s) not in index_of:
                raise _error(path, lineno, f"supporting fact {s!r} is not a statement line of this story")
            supports.append(index_of[int(s)])
        examples.append(BabiExample(tuple(story), tuple(q_tokens), answer_words, tuple(supports), task, lineno))
    return examples


def find_babi_file(directory, task: int, split: str = "train", size: Optional[str] = None) -> str:
    """The qa<task>_*_<split>.txt file in `directory` (or in its en/ for size "1k", en-10k/ for "10k")."""
    if size not in (None, "1k", "10k"):
        raise ValueError(f"size must be '1k' or '10k', got {size!r}")
    directory = os.fspath(directory)
    candidates = [directory]
    if size is not None:
        sub = "en" if size == "1k" else "en-10k"
        candidates = [os.path.join(directory, sub), directory]
    for d in candidates:
        found = sorted(glob.glob(os.path.join(d, f"qa{task}_*_{split}.txt")))
        if found:
            return found[0]
    raise FileNotFoundError(f"memops: no qa{task}_*_{split}.txt in {' or '.join(candidates)}")


def split_validation(examples: Sequence[BabiExample], fraction: float = 0.1, seed: int = 0):
    """(train, valid): a deterministic `fraction` of the questions (seeded shuffle) held out."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_valid = int(round(len(examples) * fraction))
    held = set(order[:n_valid])
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def load_babi_task(directory, task, size: Optional[str] = None, fraction: float = 0.1, seed: int = 0):
    """(train, valid) of one task (1..20) or, for task "all", every task's file found, each file split
    on its own (joint training)."""
    if task == "all":
        tasks = [t for t in range(1, 21) if _exists(directory, t, size)]
        if not tasks:
            raise FileNotFoundError(f"memops: no bAbI training files (qa*_train.txt) in {directory}")
    else:
        tasks = [int(task)]
    train, valid = [], []
    for t in tasks:
        tr, va = split_validation(read_babi(find_babi_file(directory, t, "train", size), task=t), fraction, seed)
        train += tr
        valid += va
    return train, valid


def _exists(directory, task, size):
    try:
        find_babi_file(directory, task, "train", size)
        return True
    except FileNotFoundError:
        return False


class BabiVocab:
    """Word ids (0 = padding, 1 = unknown; `words`, a memops.data Vocab) and answer classes (`answers`:
    the answer strings, sorted; an unseen answer maps to -1). to_dict / from_dict for checkpoints."""

    def __init__(self, words: Vocab, answers: Sequence[str]):
        self.words = words
        self.answers = list(answers)
        self._answer_id = {a: i for i, a in enumerate(self.answers)}

    @classmethod
    def build(cls, examples: Sequence[BabiExample]) -> "BabiVocab":
        words = Vocab.build([s for e in examples for s in e.story] + [e.question for e in examples]
                            + [e.answer for e in examples])
        return cls(words, sorted({e.answer_text for e in examples}))

    def answer_id(self, answer_text: str) -> int:
        return self._answer_id.get(answer_text, -1)

    def to_dict(self):
        return {"words": self.words.to_list(), "answers": list(self.answers)}

    @classmethod
    def from_dict(cls, d):
        return cls(Vocab.from_list(d["words"]), d["answers"])


class BabiBatch(NamedTuple):
    story: torch.Tensor  # (B, M, L) word ids, most recent sentence first, 0-padded
    question: torch.Tensor  # (B, Lq) word ids, 0-padded
    labels: torch.Tensor  # (B,) answer class (-1: not in the vocabulary)
    supports: torch.Tensor  # (B, K) memory slots of the supporting facts, -1-padded (outside memory: -1)
    task: torch.Tensor  # (B,)


def encode(examples: Sequence[BabiExample], vocab: BabiVocab, memory_size: int = 50,
           sentence_length: Optional[int] = None) -> BabiBatch:
    """Pad `examples` into a BabiBatch: the most recent `memory_size` statements of each story, slot 0
    the newest (so slot i is "i statements before the question", whatever the padding); sentences cut
    or padded to `sentence_length` (default: the longest in the batch)."""
    if memory_size < 1:
        raise ValueError(f"memory_size must be >= 1, got {memory_size}")
    stories = [list(reversed(e.story[-memory_size:])) for e in examples]
    M = max([len(s) for s in stories] + [1])
    L = sentence_length or max([len(x) for s in stories for x in s] + [len(e.question) for e in examples] + [1])
    Lq = max([len(e.question) for e in examples] + [1])
    K = max([len(e.supports) for e in examples] + [1])
    story = torch.zeros(len(examples), M, L, dtype=torch.long)
    question = torch.zeros(len(examples), Lq, dtype=torch.long)
    supports = torch.full((len(examples), K), -1, dtype=torch.long)
    for b, (e, s) in enumerate(zip(examples, stories)):
        for i, sentence in enumerate(s):
            ids = vocab.words.encode(list(sentence))[:L]
            story[b, i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        q = vocab.words.encode(list(e.question))
        question[b, :len(q)] = torch.tensor(q, dtype=torch.long)
        for k, index in enumerate(e.supports):
            slot = len(e.story) - 1 - index  # newest first
            supports[b, k] = slot if slot < memory_size else -1
    labels = torch.tensor([vocab.answer_id(e.answer_text) for e in examples], dtype=torch.long)
    task = torch.tensor([e.task for e in examples], dtype=torch.long)
    return BabiBatch(story, question, labels, supports, task)
