"""Text data for the Neural Semantic Encoder (Munkhdalai & Yu 2017): SNLI and sentence classification.

    from memops.data import load_nli_jsonl, Vocab, pad_batch_ids, load_glove
    train = load_nli_jsonl("snli_1.0/snli_1.0_train.jsonl")          # [NLIExample(premise, hypothesis, label)]
    vocab = Vocab.build([e.premise + e.hypothesis for e in train], min_freq=2)
    ids, lengths = pad_batch_ids([vocab.encode(e.premise) for e in train[:32]])   # (32, T_max), (32,)
    embedding, found = load_glove("glove.840B.300d.txt", vocab)     # (len(vocab), 300) float32

- `tokenize(text)`: lowercase word / number / punctuation tokens (rule in memops.data.text).
- `Vocab`: ids 0 = "<pad>", 1 = "<unk>", then by frequency; save/load as plain text, to_list/from_list
  for weights-only checkpoints.
- `load_nli_jsonl(path)`: SNLI / MultiNLI JSONL -> NLIExample, labels NLI_LABELS = (entailment,
  neutral, contradiction) -> 0, 1, 2; examples without a gold label ("-") skipped.
- `load_tsv(path)`: "text<TAB>label" files (GLUE SST-2) -> (TextExample list, label names).
- `load_glove(path, vocab)`: GloVe / word2vec text vectors -> embedding matrix, found count.
- `pad_batch_ids(id_lists)`: right-padded LongTensor batch and lengths.
- bAbI (memops.app.data.babi): `read_babi(path)` -> BabiExample (story, question, answer, supporting
  facts, task), `load_babi_task(dir, task or "all")` -> the 90% / 10% split, `BabiVocab`, `encode_babi` (padded tensors).
Malformed files raise DataFormatError (a ValueError) with "path:line: what is wrong".
"""

from .formats import (NLI_LABELS, NLIExample, TextExample, load_glove, load_nli_jsonl,
                      load_tsv)
from .babi import BabiBatch, BabiExample, BabiVocab, find_babi_file, load_babi_task, read_babi, split_validation
from .babi import encode as encode_babi
from .lines import DataFormatError
from .text import Vocab, pad_batch_ids, tokenize

__all__ = [
    "tokenize",
    "Vocab",
    "pad_batch_ids",
    "NLIExample",
    "TextExample",
    "NLI_LABELS",
    "load_nli_jsonl",
    "load_tsv",
    "load_glove",
    "DataFormatError",
    "BabiExample",
    "BabiVocab",
    "BabiBatch",
    "read_babi",
    "find_babi_file",
    "load_babi_task",
    "split_validation",
    "encode_babi",
]
