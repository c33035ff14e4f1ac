"""The Python API: `train`, `tune`, `load`, and the `TextModel` they return."""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from textgen import artifacts
from textgen.config import RunConfig, TrainConfig
from textgen.corpus import Corpus, TextCorpus, open_corpus
from textgen.errors import TextgenError, TextgenWarning
from textgen.stopping import StopFilter
from textgen.tokenizers import Tokenizer


class UnknownPrimeWarning(TextgenWarning):
    """Parts of a prime are not in the vocabulary and were skipped."""


class TextModel:
    """A trained textgen model: generate text from it, or measure it on held-out text.

    >>> model = textgen.train(corpus, layers=1, units=16, seq_len=32, max_steps=5,
    ...                       output_dir=models, name="tiny", force=True, verbose=0)
    >>> model
    TextModel('.../tiny', char, gru 1x16, vocab 59)
    >>> model.config.result["stopped"]
    'max_steps'
    """

    def __init__(self, path: Path, keras_model: Any, tokenizer: Tokenizer, config: RunConfig,
                 history: dict):
        self.path = path
        self.keras_model = keras_model
        self.tokenizer = tokenizer
        self.config = config
        self.history = history
        self._generator = None

    def __repr__(self) -> str:
        m = self.config.model
        return (f"TextModel({str(self.path)!r}, {self.config.level}, {m.cell} {m.layers}x{m.units}, "
                f"vocab {m.vocab_size})")

    @property
    def generator(self):
        if self._generator is None:
            from textgen.generation import Generator

            self._generator = Generator(self.keras_model, self.tokenizer)
        return self._generator

    def unknown_in(self, prime: str) -> list[str]:
        """Characters or words of `prime` the model has never seen (they are skipped).

        >>> textgen.load("tiny", output_dir=models).unknown_in("ROMEO ☃")
        ['☃']
        """
        return self.tokenizer.unknown_pieces(prime)

    def stream(self, prime: str = "", length: int = 200, *, num_samples: int = 1,
               temperature: float | Sequence[float] = 0.8, top_k: int = 0, top_p: float = 1.0,
               repetition_penalty: float = 1.0, stop: Sequence[str] = (),
               seed: int | None = None) -> Iterator[list[str]]:
        """Yield pieces of text per sample as they are generated (the prime is not repeated).

        `temperature` may be a list, cycled token by token; each sample ends at the first of the
        `stop` sequences (which is not included); `repetition_penalty` > 1 discourages tokens
        already in the text (meant for word models).

        >>> model = textgen.load("tiny", output_dir=models)
        >>> chunks = list(model.stream("ROMEO:", length=100, num_samples=2, seed=1))
        >>> [len(c[0]) for c in chunks]      # chunks grow; each holds one piece per sample
        [16, 32, 52]
        >>> "".join(c[0] for c in chunks) == model.generate("ROMEO:", 100, seed=1)[len("ROMEO:"):]
        True
        """
        from textgen.sampling import temperature_list

        temperatures = temperature_list(temperature)
        _check_sampling(length, num_samples, temperatures, top_k, top_p, repetition_penalty)
        unknown = self.unknown_in(prime)
        if unknown:
            warnings.warn(f"skipped what the vocabulary lacks in the prime: "
                          f"{', '.join(repr(p) for p in unknown[:10])}", UnknownPrimeWarning,
                          stacklevel=2)
        seed = secrets.randbelow(2**31) if seed is None else seed
        stop_filter = StopFilter(stop, num_samples) if stop else None
        for block in self.generator.stream(prime, length, num_samples=num_samples,
                                           temperature=temperatures, top_k=top_k, top_p=top_p,
                                           repetition_penalty=repetition_penalty, seed=seed):
            pieces = [self.tokenizer.decode(row) for row in block]
            if stop_filter is None:
                yield pieces
                continue
            yield stop_filter.feed(pieces)
            if stop_filter.all_done:
                return
        if stop_filter is not None:
            yield stop_filter.flush()

    def generate_many(self, prime: str = "", length: int = 200, num_samples: int = 2,
                      **options: Any) -> list[str]:
        """`num_samples` continuations generated as one batch, each starting with the prime.

        >>> model = textgen.load("tiny", output_dir=models)
        >>> texts = model.generate_many("First", length=30, num_samples=3, seed=1, stop=[":"])
        >>> len(texts), all(t.startswith("First") and ":" not in t for t in texts)
        (3, True)
        """
        parts = [[prime] for _ in range(num_samples)]
        for pieces in self.stream(prime, length, num_samples=num_samples, **options):
            for sample, piece in zip(parts, pieces, strict=True):
                sample.append(piece)
        return ["".join(sample) for sample in parts]

    def generate(self, prime: str = "", length: int = 200, **options: Any) -> str:
        """One continuation of `prime` (prime included), `length` tokens long.

        >>> model = textgen.load("tiny", output_dir=models)
        >>> text = model.generate("ROMEO:", length=40, temperature=0.8, top_p=0.95, seed=1)
        >>> text.startswith("ROMEO:"), text == model.generate("ROMEO:", 40, top_p=0.95, seed=1)
        (True, True)
        >>> model.generate("ROMEO:", 20, temperature=0) == model.generate("ROMEO:", 20, temperature=0)
        True
        """
        return self.generate_many(prime, length, num_samples=1, **options)[0]

    def export(self, output: str | os.PathLike | None = None, *, format: str = "all",
               quantize: str = "none", force: bool = False) -> Any:
        """Write a SavedModel and/or a TFLite file (default folder: the model's `export/`), each
        checked against this model; returns what was written and the measured parity.

        >>> result = textgen.load("tiny", output_dir=models).export(force=True)
        >>> sorted(result.files)
        ['metadata.json', 'model.tflite', 'saved_model/fingerprint.pb', 'saved_model/saved_model.pb', ...]
        >>> check = result.parity["tflite"]
        >>> check["max_abs_logit_diff"] < 1e-4, check["greedy_text_identical"]
        (True, True)
        >>> phone = textgen.load(result.path / "model.tflite")    # run by LiteRT
        >>> phone.generate("ROMEO:", 50, seed=1) == textgen.load("tiny", output_dir=models).generate(
        ...     "ROMEO:", 50, seed=1)
        True
        """
        if self.keras_model is None:
            raise TextgenError(f"{self.path} is an export already; export the model it came from")
        from textgen.exporting import export

        return export(self, Path(output) if output is not None else None, format, quantize, force)

    def evaluate(self, files: Sequence[str | os.PathLike] = (), *, text: str | None = None,
                 encoding: str = "utf-8", seq_len: int | None = None) -> dict:
        """Loss (nats/token), perplexity, bits per character and token count on held-out text,
        over consecutive windows of `seq_len` tokens (default: the training windows'), each read
        from a zero state as validation reads them; models trained on different windows compare
        at the same `seq_len`.

        >>> result = textgen.load("tiny", output_dir=models).evaluate([held_out])
        >>> sorted(result)
        ['bits_per_char', 'bits_per_token', 'chars', 'loss', 'perplexity', 'tokens']
        >>> result["tokens"], round(result["bits_per_char"] * 0.6931 / result["loss"], 3)
        (4832, 1.0)
        """
        if (text is None) == (not files):
            raise TextgenError("evaluate needs either files or text")
        corpus: Corpus = TextCorpus(text) if text is not None else open_corpus(
            [str(f) for f in files], encoding=encoding)
        from textgen.data import measured_source, require_windows

        if seq_len is not None and seq_len < 1:
            raise TextgenError("seq-len must be at least 1")
        seq_len = seq_len or self.config.train.seq_len
        source = measured_source(self.tokenizer, corpus, "evaluation text")
        require_windows(source, seq_len, "the evaluation text")
        return self._evaluate_source(source, seq_len)

    def novelty(self, corpus: Sequence[str | os.PathLike], *, num_samples: int = 5, length: int = 500,
                temperature: float = 0.8, seed: int = 0, encoding: str = "utf-8") -> dict:
        """How much of this model's text is copied from `corpus` (files, folders or tfds:NAME):
        the longest copied run and the share of copied n-grams, over `num_samples` samples.

        >>> report = textgen.load("tiny", output_dir=models).novelty([corpus], length=200)
        >>> report["longest_copy_tokens"] >= 1, sorted(report["copied_ngrams"])
        (True, ['16', '32', '8'])
        """
        from textgen.data import CACHE_MAX_TOKENS
        from textgen.novelty import NGRAM_SIZES, copy_report

        texts = self.generate_many("", length, num_samples=num_samples, temperature=temperature, seed=seed)
        samples = [self.tokenizer.encode(text) for text in texts]
        source = open_corpus([str(c) for c in corpus], encoding=encoding, progress=False)

        def read() -> Iterator[Any]:
            return (ids for ids, _ in self.tokenizer.encode_stream(source.chunks()))

        held: list[Any] | None = []
        corpus_tokens = 0
        for ids in read():  # one pass: the size, and the ids themselves if they fit in memory
            corpus_tokens += len(ids)
            if held is not None:
                held.append(ids)
                if corpus_tokens > CACHE_MAX_TOKENS:
                    held = None
        report = copy_report(samples, (lambda: iter(held)) if held is not None else read,
                             NGRAM_SIZES[self.config.level])
        copy = samples[report.longest_copy_sample][
            report.longest_copy_start:report.longest_copy_start + report.longest_copy_tokens]
        return {"samples": num_samples, "tokens_per_sample": length, "temperature": temperature,
                "seed": seed, "corpus_tokens": corpus_tokens,
                "longest_copy_tokens": report.longest_copy_tokens,
                "longest_copy": self.tokenizer.decode(copy),
                "copied_ngrams": {str(n): share for n, share in report.copied_ngrams.items()}}

    def _evaluate_source(self, source: Any, seq_len: int) -> dict:
        from textgen.evaluation import evaluate_windows

        return evaluate_windows(self.keras_model, source, seq_len, self.config.train.batch_size)


def _check_sampling(length: int, num_samples: int, temperatures: list[float], top_k: int,
                    top_p: float, repetition_penalty: float) -> None:
    if length < 1:
        raise TextgenError("length must be at least 1")
    if num_samples < 1:
        raise TextgenError("num-samples must be at least 1")
    if not temperatures or any(t < 0 for t in temperatures):
        raise TextgenError("temperature must be 0 (greedy) or more")
    if repetition_penalty < 1:
        raise TextgenError("repetition-penalty must be at least 1 (1 is off)")
    if top_k < 0:
        raise TextgenError("top-k must be 0 (off) or more")
    if not 0 < top_p <= 1:
        raise TextgenError("top-p must be in (0, 1]")


def load(model: str | os.PathLike, *, checkpoint: str = "best",
         output_dir: str | os.PathLike = "saved_models") -> TextModel:
    """Load a model folder (or a model name inside `output_dir`), or an exported `.tflite` file or
    SavedModel folder (run by LiteRT or TensorFlow, to check an export before shipping it).

    >>> textgen.load("tiny", output_dir=models).config.level
    'char'
    >>> textgen.load("no-such-model", output_dir=models)
    Traceback (most recent call last):
    textgen.errors.TextgenError: no-such-model: no such model (looked in ...)
    """
    from textgen.exported import METADATA_FILE, is_export, load_export

    candidate = Path(model).expanduser()
    if is_export(candidate):
        return load_export(candidate)
    if (candidate / METADATA_FILE).is_file():
        raise TextgenError(f"{candidate} is an export folder; pass the file or folder to run: "
                           f"{candidate / 'model.tflite'} or {candidate / 'saved_model'}")
    path = artifacts.resolve_model_dir(model, output_dir)
    keras_model, tokenizer, config, history = artifacts.load_model_files(path, checkpoint)
    return TextModel(path, keras_model, tokenizer, config, history)


def train(sources: str | os.PathLike | Sequence[str | os.PathLike], *, level: str | None = None,
          preset: str = "auto", cell: str | None = None, layers: int | None = None,
          units: int | None = None, embedding_dim: int | None = None, dropout: float | None = None,
          embedding_dropout: float | None = None, tie_weights: bool | None = None,
          max_vocab: int | None = None, encoding: str = "utf-8",
          val_file: str | None = None, tfds_data_dir: str | None = None,
          tfds_manual_dir: str | None = None, name: str | None = None,
          output_dir: str = "saved_models", force: bool = False, resume: bool = False,
          verbose: int = 1, epoch_samples: bool = True, init_from: str | os.PathLike | None = None,
          init_checkpoint: str = "best", extend_vocab: bool = False,
          **train_settings: Any) -> TextModel | None:
    """Train a model and return it loaded; `train_settings` are TrainConfig fields (epochs, lr,
    steps_per_epoch, strategy, ...). The network, optimizer and learning rate come from `preset`
    (textgen.presets; "auto" sizes it by the budget), under the ones given here. With
    `strategy="multi-worker"`, only the chief saves and returns the model; the other workers
    return None.

    `level` and `max_vocab` left at None are char and 20000; the network settings left at None
    (`cell`, `layers`, `units`, `embedding_dim`, `dropout`, `embedding_dropout`, `tie_weights`, and
    `optimizer` and `lr` among `train_settings`) are the preset's; `clipnorm` and `weight_decay`
    left at None, the optimizer's (adamw: 1 and 0.1, or the preset's weight decay: 0.2 for char
    `large`; sgd: 0.25, and weight decay is an error).
    `init_from` fine-tunes a trained model (a folder or a name in `output_dir`): the network is
    then the base model's, and giving a setting that differs is an error; `extend_vocab` adds the
    new corpus's missing tokens to its vocabulary.

    >>> model = textgen.train(corpus, level="word", cell="lstm", layers=1, units=16, seq_len=16,
    ...                       epochs=1, output_dir=models, name="words", verbose=0)
    >>> model.config.level, model.config.model.cell, model.config.result["epochs"]
    ('word', 'lstm', 1)
    >>> textgen.train(corpus, output_dir=models, name="words", verbose=0)
    Traceback (most recent call last):
    textgen.errors.TextgenError: model 'words' already exists in ...; pass --force to overwrite it ...
    """
    from textgen.finetune import InitOptions
    from textgen.training import DataOptions, ModelOptions, RunOptions
    from textgen.training import train as run_training

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if init_from is None and (extend_vocab or init_checkpoint != "best"):
        raise TextgenError("extend_vocab and init_checkpoint go with init_from")
    vocabulary = {k: v for k, v in {"level": level, "max_vocab": max_vocab}.items() if v is not None}
    shape = {k: v for k, v in {"cell": cell, "layers": layers, "units": units, "embedding_dim": embedding_dim,
                               "tie_weights": tie_weights}.items() if v is not None}
    path = run_training(
        DataOptions([str(s) for s in sources], encoding=encoding, val_file=val_file,
                    tfds_data_dir=tfds_data_dir, tfds_manual_dir=tfds_manual_dir, **vocabulary),
        ModelOptions(dropout=dropout, embedding_dropout=embedding_dropout, preset=preset, **shape),
        TrainConfig(**train_settings),
        RunOptions(name, output_dir, force, resume, verbose, epoch_samples),
        None if init_from is None else InitOptions(str(init_from), init_checkpoint, extend_vocab,
                                                   {**vocabulary, **shape}),
    )
    return None if path is None else load(path)


def tune(sources: str | os.PathLike | Sequence[str | os.PathLike], *, trials: int = 10,
         tuner: str = "random", cells: Sequence[str] | None = None, layers: Any = None, units: Any = None,
         dropout: Any = None, lr: Any = None, max_steps: int | None = None, time_limit: float | None = None,
         level: str = "char", embedding_dim: int = 64, max_vocab: int | None = None,
         encoding: str = "utf-8", val_file: str | None = None, tfds_data_dir: str | None = None,
         tfds_manual_dir: str | None = None, name: str | None = None, output_dir: str = "saved_models",
         force: bool = False, resume: bool = False, verbose: int = 1,
         **train_settings: Any) -> TextModel | None:
    """Search cells, layers, units, dropout and learning rate with KerasTuner (`tuner` "random"
    or "hyperband") and return the best trial's model, loaded; its folder also holds the table
    of trials (`trials.csv`, `trials.json`). `layers`, `units`, `dropout` and `lr` are (min, max)
    or one value, `cells` a list (default: the level's ranges and every cell); `max_steps` is a
    trial's budget, `time_limit` the whole search's training time; `train_settings` are
    TrainConfig fields (seq_len, batch_size, epochs, seed, ...).

    >>> model = textgen.tune(corpus, trials=2, cells=["gru", "lstm"], layers=1, units=8, max_steps=3,
    ...                      seq_len=32, output_dir=models, name="tuned", verbose=0)
    >>> import json
    >>> rows = json.loads((model.path / "trials.json").read_text())
    >>> len(rows), rows[0]["val_loss"] == model.config.result["best_val_loss"]
    (2, True)
    """
    from textgen.tokenizers import DEFAULT_MAX_VOCAB
    from textgen.training import DataOptions, RunOptions
    from textgen.tuning import SearchOptions, SearchSpace
    from textgen.tuning import tune as run_search

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    path = run_search(
        DataOptions([str(s) for s in sources], level, max_vocab or DEFAULT_MAX_VOCAB, encoding, val_file,
                    tfds_data_dir, tfds_manual_dir),
        SearchSpace.for_level(level, cells=cells, layers=layers, units=units, dropout=dropout, lr=lr,
                              embedding_dim=embedding_dim),
        TrainConfig(**train_settings),
        SearchOptions(trials, tuner, max_steps, time_limit),
        RunOptions(name, output_dir, force, resume, verbose),
    )
    return None if path is None else load(path)
