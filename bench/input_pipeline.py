"""Is the input pipeline ever the bottleneck? tf.data alone against what training consumes.

    python bench/input_pipeline.py            # prints one JSON object

On tiny shakespeare (char level, batch 64, sequence 100, the default GRU 2x256 model):
- tokens per second of preparing a corpus held in memory (reading, tokenizing, cutting windows,
  done when `training_dataset` is made), then of two passes that `training_dataset` delivers
  from memory, and of one pass of the streamed pipeline used above the cache limit (reading
  and tokenizing through a Python generator every pass), with no model attached;
- tokens per second of steady training (`model.fit`, a few warm-up steps excluded) fed from
  memory and streamed, in this run.
The ratios say how much head-room the pipeline has; they survive a noisy machine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE  # importing common also quiets TensorFlow start-up

SEQ, BATCH, STEPS = 100, 64, 40


def pipeline_rate(dataset, batches_per_pass: int, passes: int = 2) -> list[float]:
    """Tokens per second of each pass over the text through `dataset` (inputs only, no model)."""
    rates = []
    batches = iter(dataset)
    for _ in range(passes):
        start, tokens = time.perf_counter(), 0
        for _ in range(batches_per_pass):
            inputs, _targets = next(batches)
            tokens += int(inputs.shape[0]) * int(inputs.shape[1])
        rates.append(tokens / (time.perf_counter() - start))
    return rates


def training_rate(dataset, vocab: int) -> float:
    """Steady tokens per second of `fit` (the first steps, with tracing, are not counted)."""
    import keras

    from textgen.model.network import build_model
    from textgen.store.config import ModelConfig

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(vocab_size=vocab))
    model.compile(optimizer=keras.optimizers.Adam(2e-3, clipnorm=5.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clock = Clock()
    model.fit(dataset.take(STEPS), epochs=1, verbose=0, callbacks=[clock])
    warm = 5
    return (len(clock.times) - 1 - warm) * BATCH * SEQ / (clock.times[-1] - clock.times[warm])


def main() -> None:
    from textgen.text import pipeline as data
    from textgen.text.corpus import open_corpus
    from textgen.text.tokenizers import CharTokenizer

    corpus = open_corpus([str(SHAKESPEARE)])
    tokenizer, total = CharTokenizer.fit(corpus.chunks())
    source = data.TokenSource(lambda: data.token_stream(tokenizer, corpus), total, None, "all")
    start = time.perf_counter()
    in_memory = data.training_dataset(source, SEQ, BATCH, seed=0)
    prepare = total / (time.perf_counter() - start)
    first, later = pipeline_rate(in_memory, source.batches(SEQ, BATCH))

    limit = data.CACHE_MAX_TOKENS
    data.CACHE_MAX_TOKENS = 0  # as for a corpus above the cache limit: streamed, re-read every pass
    try:
        streamed = data.training_dataset(source, SEQ, BATCH, seed=0)
    finally:
        data.CACHE_MAX_TOKENS = limit
    streamed_pass = pipeline_rate(streamed, source.batches(SEQ, BATCH), passes=1)[0]
    trained_in_memory = training_rate(in_memory, tokenizer.vocab_size)
    trained_streamed = training_rate(streamed, tokenizer.vocab_size)
    print(json.dumps({
        "corpus": f"tiny shakespeare, {total:,} chars; batch {BATCH}, seq {SEQ}; GRU 2x256",
        "pipeline_tokens_per_s": {"prepare_in_memory": round(prepare), "first_pass": round(first),
                                  "second_pass": round(later), "streamed_pass": round(streamed_pass)},
        "training_tokens_per_s": {"in_memory": round(trained_in_memory), "streamed": round(trained_streamed)},
        "pipeline_headroom": {"in_memory": round(min(first, later) / trained_in_memory, 1),
                              "streamed": round(streamed_pass / trained_streamed, 1)},
        "streamed_vs_in_memory_training": round(trained_streamed / trained_in_memory, 3),
    }, indent=2))

if __name__ == "__main__":
    main()
