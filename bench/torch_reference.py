"""PyTorch's reference training loop for bench/training_speed.py (run in its own process).

    python bench/torch_reference.py CELL STEPS UNITS LAYERS EMBEDDING VOCAB BATCH SEQ

Prints steady-state tokens per second (after 5 warm-up steps) with PyTorch's default threads.
"""

import sys
import time

import torch


def main() -> None:
    cell = sys.argv[1]
    steps, units, layers, embedding, vocab, batch, seq = map(int, sys.argv[2:9])
    torch.manual_seed(0)
    recurrent = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(vocab, embedding)
            self.rnn = recurrent(embedding, units, num_layers=layers, batch_first=True)
            self.logits = torch.nn.Linear(units, vocab)

        def forward(self, x):
            return self.logits(self.rnn(self.embedding(x))[0])

    model = Model()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    data = torch.randint(1, vocab, (batch, seq + 1))

    def step() -> None:
        optimizer.zero_grad()
        logits = model(data[:, :-1])
        loss = loss_fn(logits.reshape(-1, vocab), data[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(steps * batch * seq / (time.perf_counter() - start))


if __name__ == "__main__":
    main()
