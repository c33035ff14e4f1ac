"""PyTorch's `word_language_model` recipe (pytorch/examples), for bench/word_quality.py.

    python bench/torch_word_lm.py IDS.npy VAL_TOKENS SECONDS [--tied] [--seq-len 100]

The example's defaults, rewritten for today's PyTorch: an LSTM of 2 layers x 200 units,
embedding 200, dropout 0.2 (on the embedding, between layers and on the output), plain SGD at
lr 20 with gradient clipping 0.25, batch 20, truncated BPTT of 35 steps carrying the state across
batches, and the learning rate divided by 4 after an epoch that does not improve validation.
IDS.npy holds the token ids of the whole corpus (textgen's word tokenizer); the last VAL_TOKENS
are the validation text. Training stops after SECONDS (the epoch in progress is cut there).

Prints one JSON object: the validation loss as the example measures it (one pass carrying the
state, batch 10) and as `textgen evaluate` measures it (windows of --seq-len from a zero state).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn

BATCH, BPTT, EVAL_BATCH = 20, 35, 10


class RNNModel(nn.Module):
    def __init__(self, vocab: int, size: int, layers: int, dropout: float, tied: bool):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, size)
        self.rnn = nn.LSTM(size, size, layers, dropout=dropout)
        self.decoder = nn.Linear(size, vocab)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        if tied:
            self.decoder.weight = self.encoder.weight

    def forward(self, ids, hidden=None):  # ids [time, batch]
        output, hidden = self.rnn(self.drop(self.encoder(ids)), hidden)
        return self.decoder(self.drop(output)), hidden


def columns(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """[tokens] -> [tokens // batch, batch]: `batch` contiguous streams side by side."""
    rows = len(ids) // batch
    return ids[: rows * batch].view(batch, rows).t().contiguous()


def stateful_loss(model: RNNModel, data: torch.Tensor) -> float:
    model.eval()
    total, hidden = 0.0, None
    with torch.no_grad():
        for i in range(0, len(data) - 1, BPTT):
            x, y = data[i:i + BPTT], data[i + 1:i + 1 + BPTT]
            x = x[: len(y)]
            logits, hidden = model(x, hidden)
            total += len(x) * nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                          y.reshape(-1)).item()
    return total / (len(data) - 1)


def window_loss(model: RNNModel, ids: torch.Tensor, seq_len: int) -> float:
    """textgen evaluate's protocol: consecutive windows of seq_len + 1, each from a zero state."""
    model.eval()
    count = len(ids) // (seq_len + 1)
    windows = ids[: count * (seq_len + 1)].view(count, seq_len + 1)
    total = 0.0
    with torch.no_grad():
        for start in range(0, count, 64):
            w = windows[start:start + 64].t()
            logits, _ = model(w[:-1])
            total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[1:].reshape(-1),
                                                 reduction="sum").item()
    return total / (count * seq_len)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ids")
    parser.add_argument("val_tokens", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--tied", action="store_true")
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seq-len", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(1111)
    ids = torch.from_numpy(np.load(args.ids).astype(np.int64))
    vocab = int(ids.max()) + 1
    train_ids, val_ids = ids[: -args.val_tokens], ids[-args.val_tokens:]
    train, val = columns(train_ids, BATCH), columns(val_ids, EVAL_BATCH)
    model = RNNModel(vocab, args.size, args.layers, args.dropout, args.tied)
    lr, best, epochs, steps, tokens = 20.0, math.inf, 0, 0, 0
    start = time.perf_counter()
    out_of_time = False
    while not out_of_time:
        model.train()
        hidden = None
        for i in range(0, len(train) - 1, BPTT):
            x, y = train[i:i + BPTT], train[i + 1:i + 1 + BPTT]
            x = x[: len(y)]
            if hidden is not None:
                hidden = tuple(h.detach() for h in hidden)
            model.zero_grad()
            logits, hidden = model(x, hidden)
            loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            steps += 1
            tokens += x.numel()
            if time.perf_counter() - start >= args.seconds:
                out_of_time = True
                break
        epochs += 1
        loss = stateful_loss(model, val)
        if loss < best:
            best, best_state = loss, {k: v.clone() for k, v in model.state_dict().items()}
        else:
            lr /= 4.0
    seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    windowed = window_loss(model, val_ids, args.seq_len)
    print(json.dumps({"recipe": f"pytorch word_language_model LSTM {args.layers}x{args.size}"
                                + (" tied" if args.tied else ""),
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "seconds": round(seconds, 1), "epochs": epochs, "steps": steps,
                      "tokens_per_s": round(tokens / seconds), "final_lr": lr,
                      "val_loss_stateful": round(best, 4),
                      "val_perplexity_stateful": round(math.exp(best), 2),
                      "val_loss_windows": round(windowed, 4),
                      "val_perplexity_windows": round(math.exp(windowed), 2)}))


if __name__ == "__main__":
    main()
