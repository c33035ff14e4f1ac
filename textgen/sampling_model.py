"""A trained model without TensorFlow: prime, sample, stream, stop, and measure it on held-out
text; what `textgen sample` and `textgen evaluate` need for short jobs. `load_sampler` runs a model
folder's network in numpy (textgen.generate.numpy_network), or a `.tflite` export through LiteRT,
which start in a fraction of a second where importing TensorFlow takes several; TextModel adds the
compiled generator, Keras' evaluation and export on top.
"""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from textgen.errors import TextgenError, TextgenWarning
from textgen.export.litert import LiteRTStep, export_config, export_tokenizer, read_metadata, state_sizes
from textgen.generate.evaluation import LossTally, WindowLosses, evaluate_windows, step_window_losses
from textgen.generate.novelty import NGRAM_SIZES, measure_novelty
from textgen.generate.numpy_network import NumpyNetwork
from textgen.generate.numpy_sampling import temperature_list
from textgen.generate.step_generator import StepGenerator
from textgen.generate.stopping import DocumentEnd, StopFilter
from textgen.store import artifacts
from textgen.store.config import RunConfig
from textgen.text.corpus import Corpus, TextCorpus, open_corpus
from textgen.text.records import RecordFormat
from textgen.text.tokenizers import Tokenizer
from textgen.text.tokens import measured_source, require_windows


class UnknownPrimeWarning(TextgenWarning):
    """Parts of a prime are not in the vocabulary and were skipped."""


class SamplingModel:
    """A trained model's tokenizer and settings, a generator to sample from it, and its losses on
    held-out text computed by that generator's step model.

    >>> sampler = textgen.load_sampler(tiny)          # no TensorFlow
    >>> sampler.generate("ROMEO:", 40, seed=1) == textgen.load(tiny).generate("ROMEO:", 40, seed=1)
    True
    """

    def __init__(self, path: Path, tokenizer: Tokenizer, config: RunConfig, history: dict, *,
                 checkpoint: str = "best"):
        self.path = path
        self.tokenizer = tokenizer
        self.config = config
        self.history = history
        self._checkpoint = checkpoint
        self._generator: Any = None

    def __repr__(self) -> str:
        m = self.config.model
        return (f"{type(self).__name__}({str(self.path)!r}, {self.config.level}, "
                f"{m.cell} {m.layers}x{m.units}, vocab {m.vocab_size})")

    @property
    def generator(self) -> Any:
        if self._generator is None:
            self._generator = self._make_generator()
        return self._generator

    def _make_generator(self) -> Any:
        """The checkpoint's network in numpy, token by token."""
        network = NumpyNetwork(artifacts.checkpoint_path(self.path, self._checkpoint))
        return StepGenerator(network, self.tokenizer, network.state_sizes)

    def unknown_in(self, prime: str) -> list[str]:
        """Characters or words of `prime` the model has never seen (they are skipped).

        >>> textgen.load(tiny).unknown_in("ROMEO ☃")
        ['☃']
        """
        return self.tokenizer.unknown_pieces(prime)

    def stream(self, prime: str = "", length: int = 200, **options: Any) -> Iterator[list[str]]:
        """Yield pieces of text per sample as they are generated (the prime is not repeated);
        `options` as `stream_rows` takes them.

        >>> model = textgen.load(tiny)
        >>> chunks = list(model.stream("ROMEO:", length=100, num_samples=2, seed=1))
        >>> [len(c[0]) for c in chunks]      # chunks grow; each holds one piece per sample
        [16, 32, 52]
        >>> "".join(c[0] for c in chunks) == model.generate("ROMEO:", 100, seed=1)[len("ROMEO:"):]
        True
        """
        for pieces, _ in self.stream_rows(prime, length, **options):
            yield pieces

    def stream_rows(self, prime: str = "", length: int = 200, *, num_samples: int = 1,
                    temperature: float | Sequence[float] = 0.8, top_k: int = 0, top_p: float = 1.0,
                    repetition_penalty: float = 1.0, stop: Sequence[str] = (), seed: int | None = None,
                    label: str | None = None,
                    stop_at_end: bool = True) -> Iterator[tuple[list[str], list[bool]]]:
        """Yield each chunk's pieces of text per sample, and which samples have ended (every one
        has when the iteration does), so that finished samples can be shown while others go on.

        `temperature` may be a list, cycled token by token; each sample ends at the first of the
        `stop` sequences (which is not included); `repetition_penalty` > 1 discourages tokens
        already in the text (meant for word models). A model trained on records starts a new
        record (of `label`'s kind if given; `prime` is its beginning) and ends it where the model
        ends it, unless `stop_at_end` is False: then it runs on into further records, each after
        a blank line.
        """
        temperatures = temperature_list(temperature)
        check_sampling(length, num_samples, temperatures, top_k, top_p, repetition_penalty)
        unknown = self.unknown_in(prime)
        if unknown:
            warnings.warn(f"skipped what the vocabulary lacks in the prime: "
                          f"{', '.join(repr(p) for p in unknown[:10])}", UnknownPrimeWarning,
                          stacklevel=3)
        seed = secrets.randbelow(2**31) if seed is None else seed
        stops = StopFilter(stop, num_samples) if stop else None
        specials = self.tokenizer.specials
        ends = DocumentEnd(specials.eos, num_samples) if specials and stop_at_end else None
        filters: list[StopFilter | DocumentEnd] = [f for f in (stops, ends) if f is not None]
        for block in self.generator.stream(prime, length, num_samples=num_samples,
                                           temperature=temperatures, top_k=top_k, top_p=top_p,
                                           repetition_penalty=repetition_penalty, seed=seed, label=label):
            rows = block if ends is None else ends.cut(block)
            pieces = [self.tokenizer.decode_records(row) for row in rows]
            if stops is not None:
                pieces = stops.feed(pieces)
                if ends is not None:  # a record that ended: what was held back for a stop is its text
                    pieces = [piece + (stops.finish(i) if ended else "")
                              for i, (piece, ended) in enumerate(zip(pieces, ends.done, strict=True))]
            finished = [any(f.done[i] for f in filters) for i in range(num_samples)]
            yield pieces, finished
            if all(finished):
                return
        if stops is not None:
            yield stops.flush(), [True] * num_samples

    def generate_many(self, prime: str = "", length: int = 200, num_samples: int = 2,
                      **options: Any) -> list[str]:
        """`num_samples` continuations generated as one batch, each starting with the prime.

        >>> model = textgen.load(tiny)
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

        >>> model = textgen.load(tiny)
        >>> text = model.generate("ROMEO:", length=40, temperature=0.8, top_p=0.95, seed=1)
        >>> text.startswith("ROMEO:"), text == model.generate("ROMEO:", 40, top_p=0.95, seed=1)
        (True, True)
        >>> model.generate("ROMEO:", 20, temperature=0) == model.generate("ROMEO:", 20, temperature=0)
        True
        """
        return self.generate_many(prime, length, num_samples=1, **options)[0]

    def evaluate(self, files: Sequence[str | os.PathLike] = (), *, text: str | None = None,
                 encoding: str = "utf-8", seq_len: int | None = None) -> dict:
        """Loss (nats/token), perplexity, bits per character and token count on held-out text,
        over consecutive windows of `seq_len` tokens (default: the training windows'), each read
        from a zero state as validation reads them; models trained on different windows compare
        at the same `seq_len`.

        >>> result = textgen.load(tiny).evaluate([held_out])
        >>> sorted(result)
        ['bits_per_char', 'bits_per_token', 'chars', 'loss', 'perplexity', 'tokens']
        >>> result["tokens"], round(result["bits_per_char"] * 0.6931 / result["loss"], 3)
        (4832, 1.0)
        >>> in_numpy = textgen.load_sampler(tiny).evaluate([held_out])    # no TensorFlow
        >>> in_numpy["tokens"], abs(in_numpy["loss"] - result["loss"]) < 1e-5
        (4832, True)
        """
        if (text is None) == (not files):
            raise TextgenError("evaluate needs either files or text")
        if seq_len is not None and seq_len < 1:
            raise TextgenError("seq-len must be at least 1")
        corpus: Corpus = TextCorpus(text) if text is not None else open_corpus(
            [str(f) for f in files], encoding=encoding, records=self.record_format)
        seq_len = seq_len or self.config.train.seq_len
        source = measured_source(self.tokenizer, corpus, "evaluation text")
        require_windows(source, seq_len, "the evaluation text")
        return evaluate_windows(self._window_losses(), source, seq_len, self.config.train.batch_size,
                                LossTally(self.tokenizer.vocab_size, self.tokenizer.specials))

    def novelty(self, corpus: Sequence[str | os.PathLike], *, num_samples: int = 5, length: int = 500,
                temperature: float = 0.8, seed: int = 0, encoding: str = "utf-8") -> dict:
        """How much of this model's text is copied from `corpus` (files, folders or tfds:NAME):
        the longest copied run and the share of copied n-grams, over `num_samples` samples; for a
        model of records (each sample one record), also how many samples are a training record
        verbatim (`verbatim_records`, `verbatim_share`).

        >>> report = textgen.load(tiny).novelty([corpus], length=200)
        >>> report["longest_copy_tokens"] >= 1, sorted(report["copied_ngrams"])
        (True, ['16', '32', '8'])
        """
        texts = self.generate_many("", length, num_samples=num_samples, temperature=temperature, seed=seed)
        source = open_corpus([str(c) for c in corpus], encoding=encoding, progress=False,
                             records=self.record_format)
        report = measure_novelty(texts, self.tokenizer, source, NGRAM_SIZES[self.config.level])
        return {"samples": num_samples, "tokens_per_sample": length, "temperature": temperature,
                "seed": seed, **report}

    @property
    def record_format(self) -> RecordFormat | None:
        """How the records this model was trained on were read (files to evaluate are read alike);
        None for a model of one text."""
        if self.config.corpus.get("kind") != "records":
            return None
        return RecordFormat.from_dict(self.config.corpus.get("documents", {}))

    def _window_losses(self) -> WindowLosses:
        """The cross-entropy of each window's targets, from the step model that samples."""
        return step_window_losses(self.generator.runner, self.generator.state_sizes)


def check_sampling(length: int, num_samples: int, temperatures: list[float], top_k: int,
                   top_p: float, repetition_penalty: float) -> None:
    """One clear error for a sampling setting no generator can use."""
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


def load_sampler(model: str | os.PathLike, *, checkpoint: str = "best",
                 output_dir: str | os.PathLike = "saved_models") -> SamplingModel:
    """A model folder (or a model name inside `output_dir`) run in numpy, or an exported `.tflite`
    file, run by LiteRT, to generate and evaluate without importing TensorFlow: the same text as
    `textgen.load(model).generate(...)` for the same seed, and the same losses to about 1e-6.
    (SavedModels are run by `textgen.load`.)"""
    candidate = Path(model).expanduser()
    if candidate.suffix == ".tflite":
        if not candidate.is_file():
            raise TextgenError(f"{candidate}: no such file")
        metadata = read_metadata(candidate.parent)
        tokenizer = export_tokenizer(metadata)
        sampler = SamplingModel(candidate, tokenizer, export_config(metadata), {})
        sampler._generator = StepGenerator(LiteRTStep(candidate), tokenizer, state_sizes(metadata))
        return sampler
    path = artifacts.resolve_model_dir(model, output_dir)
    tokenizer, config, history = artifacts.read_model_folder(path)
    sampler = SamplingModel(path, tokenizer, config, history, checkpoint=checkpoint)
    sampler.generator  # noqa: B018 - a missing or broken file is an error now, not at the first sample
    return sampler
