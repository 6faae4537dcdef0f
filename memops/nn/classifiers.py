"""Text classifiers of the NSE paper (Munkhdalai & Yu 2017), each with an LSTM baseline encoder.

    SequenceClassifier   token ids -> class logits (NSE sentence encoder, pooled; or an LSTM)
    NLIClassifier        premise and hypothesis ids -> 3 NLI logits (NSE + MMA-NSE; or an LSTM)
"""

import torch
from torch import nn

from .nse import MMANSE, NSE


class SequenceClassifier(nn.Module):
    """Token ids (B,T) and lengths -> class logits: an embedding, an encoder ("nse": memops.nn.NSE,
    pooled at the last step; "lstm": nn.LSTM, its last hidden state), a linear layer."""

    def __init__(self, encoder, vocab_size, hidden_size, num_classes, embed_size=None, dropout=0.0, backend=None):
        super().__init__()
        embed_size = embed_size or hidden_size
        self.kind = encoder
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=0)
        if encoder == "nse":
            self.encoder = NSE(embed_size, hidden_size, dropout=dropout, backend=backend)
        elif encoder == "lstm":
            self.encoder = nn.LSTM(embed_size, hidden_size, batch_first=True)
        else:
            raise ValueError(f"encoder must be 'nse' or 'lstm', got {encoder!r}")
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_classes)

    def encode(self, ids, lengths):
        x = self.embedding(ids)
        if self.kind == "nse":
            return self.encoder(x, lengths).pooled
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.encoder(packed)
        return h[-1]

    def forward(self, ids, lengths):
        return self.out(self.dropout(self.encode(ids, lengths)))


class NLIClassifier(nn.Module):
    """Premise and hypothesis token ids -> 3 NLI logits. "nse": the premise is read by an NSE and the
    hypothesis by an MMA-NSE that reads and writes the premise's memory as well as its own; "lstm":
    one LSTM encodes both. Features [p; h; |p - h|; p * h] -> MLP."""

    def __init__(self, encoder, vocab_size, hidden_size, embed_size=300, num_classes=3, dropout=0.0, backend=None):
        super().__init__()
        self.kind = encoder
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=0)
        if encoder == "nse":
            self.premise = NSE(embed_size, hidden_size, dropout=dropout, backend=backend)
            self.hypothesis = MMANSE(embed_size, hidden_size, dropout=dropout, backend=backend)
        elif encoder == "lstm":
            self.lstm = nn.LSTM(embed_size, hidden_size, batch_first=True)
        else:
            raise ValueError(f"encoder must be 'nse' or 'lstm', got {encoder!r}")
        self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden_size, hidden_size), nn.ReLU(),
                                      nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))

    def _lstm(self, ids, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(ids), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        return self.lstm(packed)[1][0][-1]

    def forward(self, p_ids, p_len, h_ids, h_len):
        if self.kind == "nse":
            p = self.premise(self.embedding(p_ids), p_len)
            h = self.hypothesis(self.embedding(h_ids), h_len, memories=[(p.memory, p.mask)]).pooled
            p = p.pooled
        else:
            p, h = self._lstm(p_ids, p_len), self._lstm(h_ids, h_len)
        return self.classify(torch.cat([p, h, (p - h).abs(), p * h], dim=-1))
