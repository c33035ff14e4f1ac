"""A trained model as the Python API hands it out: generate text from it, measure it on held-out
text, check how much it copies, export it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from textgen.errors import TextgenError
from textgen.export.write import ExportResult, export
from textgen.generate.evaluation import LossTally, evaluate_windows
from textgen.generate.generator import Generator
from textgen.generate.novelty import NGRAM_SIZES, measure_novelty
from textgen.model.network import load_network
from textgen.sampling_model import SamplingModel
from textgen.store import artifacts
from textgen.store.config import RunConfig
from textgen.text.corpus import Corpus, TextCorpus, open_corpus
from textgen.text.pipeline import TokenSource, measured_source, require_windows
from textgen.text.records import RecordFormat
from textgen.text.tokenizers import Tokenizer


class TextModel(SamplingModel):
    """A trained textgen model: generate text from it, or measure it on held-out text.

    >>> model = textgen.load(tiny)
    >>> model
    TextModel('.../tiny', char, gru 1x16, vocab 59)
    >>> model.config.result["stopped"]
    'max_steps'
    """

    def __init__(self, path: Path, tokenizer: Tokenizer, config: RunConfig, history: dict,
                 keras_model: keras.Model | None = None, *, checkpoint: str = "best"):
        """`keras_model` None: the checkpoint's file is read when the network is first needed."""
        super().__init__(path, tokenizer, config, history, checkpoint=checkpoint)
        self._keras_model = keras_model

    @property
    def keras_model(self) -> keras.Model:
        """The underlying Keras network (token ids [batch, time] -> logits [batch, time, vocab])."""
        if self._keras_model is None:
            self._keras_model = load_network(artifacts.checkpoint_path(self.path, self._checkpoint))
        return self._keras_model

    def _make_generator(self) -> Any:
        return Generator(self.keras_model, self.tokenizer)

    def export(self, output: str | os.PathLike | None = None, *, format: str = "all",
               quantize: str = "none", force: bool = False) -> ExportResult:
        """Write a SavedModel and/or a TFLite file (default folder: the model's `export/`), each
        checked against this model; returns what was written and the measured parity.

        >>> result = textgen.load(tiny).export(force=True)
        >>> sorted(result.files)
        ['metadata.json', 'model.tflite', 'saved_model/fingerprint.pb', 'saved_model/saved_model.pb', ...]
        >>> check = result.parity["tflite"]
        >>> check["max_abs_logit_diff"] < 1e-4, check["greedy_text_identical"]
        (True, True)
        >>> phone = textgen.load(result.path / "model.tflite")    # run by LiteRT
        >>> phone.generate("ROMEO:", 50, seed=1) == textgen.load(tiny).generate("ROMEO:", 50, seed=1)
        True
        """
        return export(self, Path(output) if output is not None else None, format, quantize, force)

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
        return self._evaluate_source(source, seq_len)

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

    def _tally(self) -> LossTally:
        return LossTally(self.tokenizer.vocab_size, self.tokenizer.specials)

    def _evaluate_source(self, source: TokenSource, seq_len: int) -> dict:
        return evaluate_windows(self.keras_model, source, seq_len, self.config.train.batch_size,
                                self._tally())
