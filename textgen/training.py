"""Fit a model on a corpus: data -> model -> Keras `fit` with callbacks -> published folder."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import keras

from textgen import artifacts, finetune, presets
from textgen.config import ModelConfig, RunConfig, TrainConfig
from textgen.corpus import Corpus, FileCorpus, TfdsCorpus, open_corpus
from textgen.data import (
    Streams,
    TokenSource,
    carried_batches,
    carried_training_dataset,
    corpus_streams,
    count_tokens,
    evaluation_dataset,
    measured_source,
    require_windows,
    split_tail,
    token_stream,
    training_dataset,
)
from textgen.distribute import Placement, is_chief, place, read_cluster
from textgen.errors import TextgenError
from textgen.evaluation import LN2, perplexity
from textgen.fast_recurrent import carry_states
from textgen.finetune import InitOptions, Start
from textgen.generation import Generator
from textgen.idcache import IdCache
from textgen.models import build_model
from textgen.plotting import CURVES_FILE, PLOT_EXTRA_HINT, plot_history, plotting_available
from textgen.precision import apply_precision, gpu_capabilities, resolve_precision
from textgen.schedule import BudgetSchedule, EarlyStopping
from textgen.tokenizers import DEFAULT_MAX_VOCAB, Tokenizer, load_tokenizer, tokenizer_for

Log = Callable[[str], None]


@dataclass
class DataOptions:
    """Where the text comes from and how it is cut into tokens."""

    sources: Sequence[str]
    level: str = "char"
    max_vocab: int = DEFAULT_MAX_VOCAB
    encoding: str = "utf-8"
    val_file: str | None = None
    tfds_data_dir: str | None = None
    tfds_manual_dir: str | None = None
    cache_dir: str | None = None  # keep tokenized text files here (textgen.idcache); None: no cache


@dataclass
class ModelOptions:
    """Network shape: a preset (textgen.presets), and the settings the user gave on top of it
    (None: the preset's). The vocabulary size comes from the tokenizer."""

    cell: str | None = None
    layers: int | None = None
    units: int | None = None
    embedding_dim: int | None = None
    dropout: float | None = None
    tie_weights: bool | None = None
    preset: str = "auto"
    embedding_dropout: float | None = None

    def given(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "preset"}


@dataclass
class RunOptions:
    """Where the model goes and how the run behaves."""

    name: str | None = None
    output_dir: str = "saved_models"
    force: bool = False
    resume: bool = False
    verbose: int = 1
    epoch_samples: bool = True
    log: Log = field(default=print)


# -- callbacks -----------------------------------------------------------------------------------
class EpochLog(keras.callbacks.Callback):
    """Adds perplexity and bits per character to each epoch's logs, and keeps history.json.

    It runs before Keras' History and progress bar, which therefore show and keep these too.
    The history file also gets epoch time and tokens/s, and stays continuous across `--resume`.
    """

    def __init__(self, path: Path, tokens_per_step: int, val_chars_per_token: float, level: str):
        super().__init__()
        self.path = path
        self.tokens_per_step = tokens_per_step
        self.val_chars_per_token = val_chars_per_token
        self.level = level
        self.history: dict[str, list] = {}
        if path.exists():
            self.history = json.loads(path.read_text(encoding="utf-8"))

    def on_epoch_begin(self, epoch, logs=None):
        # After a resume, epochs beyond the restored one were lost with the crash: drop them.
        for values in self.history.values():
            del values[epoch:]
        self.start = time.perf_counter()
        self.train_seconds: float | None = None
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_test_begin(self, logs=None):
        if self.train_seconds is None and hasattr(self, "start"):
            self.train_seconds = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if "loss" in logs:
            logs["perplexity"] = perplexity(logs["loss"])
            if self.level == "char":
                logs["bits_per_char"] = logs["loss"] / LN2
        if "val_loss" in logs:
            logs["val_perplexity"] = perplexity(logs["val_loss"])
            logs["val_bits_per_char"] = logs["val_loss"] / LN2 / self.val_chars_per_token
        train_seconds = self.train_seconds or (time.perf_counter() - self.start)
        record = {**logs, "epoch_seconds": time.perf_counter() - self.start, "steps": self.steps,
                  "tokens_per_second": self.steps * self.tokens_per_step / max(train_seconds, 1e-9)}
        for key, value in record.items():
            number = int(value) if key == "steps" else float(value)
            self.history.setdefault(key, [None] * epoch).append(number)
        artifacts.write_json_atomic(self.path, self.history)


class Budget(keras.callbacks.Callback):
    """Stops training cleanly after `max_steps` steps or `time_limit` seconds (then we save)."""

    def __init__(self, max_steps: int | None, time_limit: float | None):
        super().__init__()
        self.max_steps = max_steps
        self.time_limit = time_limit
        self.steps = 0
        self.reason: str | None = None
        self.cut_epoch = False  # the budget ran out in the middle of an epoch
        self.first_step_at: float | None = None  # perf_counter() at the end of the first step

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def _spent(self) -> str | None:
        if self.max_steps is not None and self.steps >= self.max_steps:
            return "max_steps"
        if self.time_limit is not None and time.perf_counter() - self.start >= self.time_limit:
            return "time_limit"
        return None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        if not self.reason and (reason := self._spent()):
            self.reason = reason
            self.cut_epoch = batch + 1 < (self.params.get("steps") or float("inf"))
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if not self.reason and (reason := self._spent()):
            self.reason = reason
            self.model.stop_training = True


class CtrlCBetweenSteps(keras.callbacks.Callback):
    """While `fit` runs, turns the first Ctrl-C into a KeyboardInterrupt raised at the next step's end.

    Python raises KeyboardInterrupt wherever the main thread happens to be when the signal lands;
    inside a `__del__` or a weakref callback (frequent at an epoch's end, as iterators and saves
    are collected) it is printed as "Exception ignored" and swallowed, and training went on as if
    no key was pressed. Raised from here, it always reaches fit's caller. A second Ctrl-C before
    the step ends interrupts at once, as usual.
    """

    def __init__(self):
        super().__init__()
        self.pressed = False
        self._previous: Any = None

    def __enter__(self) -> CtrlCBetweenSteps:
        with contextlib.suppress(ValueError):  # not the main thread: signals do not reach it anyway
            self._previous = signal.signal(signal.SIGINT, self._press)
        return self

    def __exit__(self, exc_type, *_) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self.pressed and exc_type is None:  # pressed after the last step's end
            raise KeyboardInterrupt

    def _press(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def _raise_if_pressed(self, *_args, **_kwargs) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_begin = on_epoch_end = _raise_if_pressed


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever the validation loss improves, atomically.

    Keras' ModelCheckpoint writes the archive in place, so a process killed while it saves
    leaves a corrupt best model; this one writes beside it and renames.
    """

    def __init__(self, path: Path, best: float = math.inf):
        super().__init__()
        self.path = path
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss")
        if loss is None or not loss < self.best:
            return
        saving = self.path.with_name(f"saving.{self.path.name}")
        self.model.save(saving, overwrite=True)
        saving.replace(self.path)
        self.best = loss


BACKUP_DIR = "backup"
BACKUP_METADATA = "training_metadata.json"  # Keras' name; we add "steps" to it
BACKUP_SECONDS = 600.0  # without --backup-every: within an epoch, a backup every 10 minutes


class RunBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, kept after training, with these changes:

    - every finished epoch is backed up, and within epochs every `every_steps` steps (Keras'
      `save_freq`) or, without it, every `every_seconds` of training, so that long epochs lose
      little to a crash while short ones are not slowed by saving;
    - an epoch cut short by the budget is recorded as unfinished: `--resume` runs that epoch
      again in full instead of counting its few steps as a whole epoch;
    - each backup records the optimizer's step count, so that an endless-data run resumes
      where its data left off (`backup_position`), and is written atomically.

    A resumed run starts the interrupted epoch again from its first batch (Keras cannot start an
    epoch in the middle), with the weights and optimizer state of the last backup.
    """

    def __init__(self, backup_dir: Path, budget: Budget, every_steps: int | None = None,
                 every_seconds: float | None = BACKUP_SECONDS):
        super().__init__(str(backup_dir), save_freq=every_steps or "epoch", delete_checkpoint=False,
                         double_checkpoint=True)
        self.budget = budget
        self.every_seconds = None if every_steps else every_seconds
        self._saved_at = time.monotonic()

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._saved_at = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)  # the `save_freq` steps
        if self.every_seconds is not None:
            self._last_batch_seen = batch
            if time.monotonic() - self._saved_at >= self.every_seconds:
                self._save_model()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)  # marks the epoch finished; saves unless steps are counted
        if self.budget.cut_epoch:
            self._current_epoch = epoch
            self._save_model()
        elif self.save_freq != "epoch":
            self._save_model()

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        weights, metadata = Path(self._weights_path), Path(self._training_metadata_path)
        if self.double_checkpoint and weights.exists():
            shutil.copyfile(weights, self._prev_weights_path)
            if metadata.exists():
                shutil.copyfile(metadata, self._prev_training_metadata_path)
        saving = backup / "saving.weights.h5"
        self.model.save_weights(saving, overwrite=True)
        digest = _sha256(saving)
        saving.replace(weights)
        # The metadata names the weights it goes with: after a crash between the two writes,
        # `_load_model` sees new weights beside old metadata and falls back to the previous pair.
        artifacts.write_json_atomic(metadata, {
            "epoch": self._current_epoch, "batch": self._last_batch_seen,
            "steps": optimizer_steps(self.model), "weights_sha256": digest})
        self._saved_at = time.monotonic()

    def _load_model(self):
        """Restore the newest backup whose weights and metadata belong together, or start afresh."""
        pairs = _backup_pairs(self)
        complete = _newest_complete_pair(pairs)
        if complete is None:  # train from the start rather than pair weights with another epoch
            for path in (path for pair in pairs for path in pair):
                path.unlink(missing_ok=True)
        elif complete != pairs[0]:
            shutil.copyfile(complete[0], pairs[0][0])
            shutil.copyfile(complete[1], pairs[0][1])
        super()._load_model()


def _backup_pairs(backup: keras.callbacks.BackupAndRestore) -> list[tuple[Path, Path]]:
    """The (weights, metadata) files Keras names for a backup: the newest pair, then the previous."""
    return [(Path(backup._weights_path), Path(backup._training_metadata_path)),
            (Path(backup._prev_weights_path), Path(backup._prev_training_metadata_path))]


def _newest_complete_pair(pairs: list[tuple[Path, Path]]) -> tuple[Path, Path] | None:
    """The first (weights, metadata) pair whose metadata records those very weights, if any."""
    return next((pair for pair in pairs if _matching_pair(*pair)), None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _matching_pair(weights: Path, metadata: Path) -> bool:
    try:
        recorded = json.loads(metadata.read_text(encoding="utf-8")).get("weights_sha256")
        return recorded is not None and recorded == _sha256(weights)
    except (OSError, ValueError, AttributeError):
        return False


def optimizer_steps(model: keras.Model) -> int:
    """Training steps applied to the weights, as the optimizer counts them (under any strategy)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class BackupPosition(NamedTuple):
    epoch: int  # the epoch a resumed run starts with (Keras' initial_epoch)
    steps: int  # the training steps behind the backed-up weights


def backup_position(backup_dir: Path) -> BackupPosition:
    """Where the backup a resumed run restores leaves off (the start without one)."""
    complete = _newest_complete_pair(_backup_pairs(keras.callbacks.BackupAndRestore(str(backup_dir))))
    if complete is None:
        return BackupPosition(0, 0)
    recorded = json.loads(complete[1].read_text(encoding="utf-8"))
    return BackupPosition(int(recorded["epoch"]), int(recorded["steps"]))


class EpochSamples(keras.callbacks.Callback):
    """Prints a short sample after each epoch, so users see the model learn."""

    def __init__(self, generator: Generator, log: Log, length: int, seed: int):
        super().__init__()
        self.generator = generator
        self.log = log
        self.length = length
        self.seed = seed

    def on_epoch_end(self, epoch, logs=None):
        self.generator.sync_weights()
        text = self.generator.generate("", self.length, temperature=0.8, seed=self.seed + epoch)[0]
        self.log(f"--- sample after epoch {epoch + 1} ---\n{text.strip()}\n---")


# -- the run ------------------------------------------------------------------------------------
@dataclass
class PreparedData:
    tokenizer: Tokenizer
    train: TokenSource
    val: TokenSource
    description: dict[str, Any]


def default_name(sources: Sequence[str], level: str) -> str:
    first = sources[0]
    stem = first.split(":", 1)[1] if first.startswith("tfds:") else Path(first.rstrip("/")).stem
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem) or "model"
    return f"{stem}-{level}"


def model_name(name: str) -> str:
    """A model folder's name, checked: a name inside the output folder, never a path."""
    if not name or "/" in name or name.startswith("."):
        raise TextgenError(f"invalid model name {name!r}")
    return name


def open_sources(options: DataOptions, progress: bool = True) -> Corpus:
    return open_corpus(options.sources, encoding=options.encoding, tfds_data_dir=options.tfds_data_dir,
                       tfds_manual_dir=options.tfds_manual_dir, progress=progress)


def prepare_data(options: DataOptions, train_config: TrainConfig, tokenizer: Tokenizer | None,
                 log: Log, progress: bool = True) -> PreparedData:
    """Fit (or reuse) the tokenizer, then describe the train and validation token ranges."""
    corpus = open_sources(options, progress)
    if options.cache_dir is not None and not isinstance(corpus, FileCorpus):
        raise TextgenError("--cache-ids caches text files; TensorFlow Datasets keep their own cache")
    val_corpus: Corpus | None = None
    if options.val_file:
        val_corpus = open_corpus([options.val_file], encoding=options.encoding)
    elif isinstance(corpus, TfdsCorpus) and "validation" in corpus.splits():
        val_corpus = dataclasses.replace(corpus, split="validation")

    streams: Streams
    if options.cache_dir is not None and isinstance(corpus, FileCorpus):
        cache = IdCache.open(Path(options.cache_dir), corpus)
        if tokenizer is None:
            log("Building the vocabulary (or reading it from the cache)...")
            tokenizer = cache.tokenizer(options.level, options.max_vocab)
        log("Tokenizing (or reading the tokens from the cache)...")
        cached = cache.ids(tokenizer)
        total, streams = cached.tokens, cached.stream
    else:
        if tokenizer is None:
            log("Building the vocabulary...")
            tokenizer, total = tokenizer_for(options.level).fit(corpus.chunks(), options.max_vocab)
        else:
            total = count_tokens(token_stream(tokenizer, corpus))[0]
        streams = corpus_streams(tokenizer, corpus)
    if total == 0:
        raise TextgenError("the corpus holds no text")

    if val_corpus is None:
        train, val = split_tail(streams, tokenizer.level, total, train_config.val_fraction,
                                train_config.max_val_tokens)
    else:
        train = TokenSource(lambda: streams(0, None), total, None, "all tokens")
        val = measured_source(tokenizer, val_corpus, "validation corpus")
    require_windows(train, train_config.seq_len, "the training text")
    require_windows(val, train_config.seq_len, "the validation text")
    description = {**corpus.describe(), "tokens": total, "train_tokens": train.tokens,
                   "val_tokens": val.tokens, "validation": val_corpus.describe() if val_corpus
                   else f"last {train_config.val_fraction:.0%} of the corpus (capped at "
                        f"{train_config.max_val_tokens:,} tokens)"}
    return PreparedData(tokenizer, train, val, description)


def train(data_options: DataOptions, model_options: ModelOptions, train_config: TrainConfig,
          run_options: RunOptions, init: InitOptions | None = None) -> Path | None:
    """Train and publish a model folder; returns its path. Ctrl-C saves what was finished.
    With `init`, the run fine-tunes a trained model (textgen.finetune).

    In a multi-worker run every worker trains, but only the chief writes the model folder: the
    others keep their files in a temporary folder, deleted at the end, and return None.
    """
    began = time.perf_counter()
    log = run_options.log if run_options.verbose else (lambda message: None)
    name = model_name(run_options.name or default_name(data_options.sources, data_options.level))
    if train_config.strategy == "multi-worker" and train_config.time_limit is not None:
        raise TextgenError("--time-limit cannot stop several workers at the same step; with --strategy "
                           "multi-worker use --max-steps or --epochs")
    if init is not None:  # found in the real output folder, which non-chief workers do not write to
        init = dataclasses.replace(init, model=str(finetune.resolve_base(init.model, run_options.output_dir)))
    if train_config.strategy != "multi-worker" or is_chief(*read_cluster()):
        placement = place(train_config.strategy, train_config.cpu_devices)  # first: it configures devices
        return _train(data_options, model_options, train_config, run_options, placement, name, log, began,
                      init)
    with tempfile.TemporaryDirectory(prefix="textgen-worker-") as scratch:
        if run_options.resume:
            _copy_unfinished_run(Path(run_options.output_dir) / name, Path(scratch) / name)
        placement = place(train_config.strategy, train_config.cpu_devices)
        _train(data_options, model_options, train_config,
               dataclasses.replace(run_options, output_dir=scratch), placement, name, log, began, init)
    return None


def _copy_unfinished_run(model_dir: Path, scratch_model_dir: Path) -> None:
    """Give a non-chief worker the chief's backup to resume from, as every worker must restore it.

    This runs before the worker joins the cluster, and the chief writes nothing until all have
    joined; temporary files (dot names, a weights file being saved) are left out all the same.
    """
    shared = artifacts.work_dir(model_dir)
    if not (shared / artifacts.CONFIG_FILE).is_file():
        raise TextgenError(f"this worker cannot see the unfinished run {shared}: to resume a multi-worker "
                           "run, --output-dir must be a folder all workers share")
    shutil.copytree(shared, artifacts.work_dir(scratch_model_dir),
                    ignore=lambda folder, names: [n for n in names if n.startswith((".", "saving."))])


def _train(data_options: DataOptions, model_options: ModelOptions, train_config: TrainConfig,
           run_options: RunOptions, placement: Placement, name: str, log: Log, began: float,
           init: InitOptions | None) -> Path:
    model_dir = Path(run_options.output_dir) / name
    run_dir = artifacts.work_dir(model_dir)
    if init is not None and not run_options.resume:
        finetune.check_target(Path(init.model), model_dir)
    artifacts.check_target(model_dir, artifacts.work_dir(model_dir), artifacts.CONFIG_FILE, "run",
                           resume=run_options.resume, force=run_options.force)
    if not run_options.resume and init is None:  # optimizer settings that cannot work: before reading
        train_config.optimized(*presets.optimizer_and_rate(presets.PRESETS[data_options.level][0],
                                                           train_config.optimizer, train_config.lr))

    tokenizer = None
    start: Start | None = None  # a new fine-tuning run's base
    if run_options.resume:
        saved = RunConfig.load(run_dir / artifacts.CONFIG_FILE)
        if init is not None:
            finetune.check_resume(init, saved, name)
        tokenizer = load_tokenizer(run_dir / artifacts.TOKENIZER_FILE)
        data_options = dataclasses.replace(data_options, level=saved.level)
        # the budget and the machinery may change between sessions; the model and its training not
        session = {k: getattr(train_config, k) for k in ("epochs", "max_steps", "time_limit", "backup_every",
                                                         "strategy", "cpu_devices")}
        train_config = dataclasses.replace(saved.train, **session)
    elif init is not None:
        corpus = open_sources(data_options, bool(run_options.verbose))
        start = finetune.plan(init, corpus.chunks, data_options.max_vocab, train_config)
        tokenizer = start.tokenizer
        data_options = dataclasses.replace(data_options, level=tokenizer.level)

    batch_given = train_config.batch_size is not None
    train_config = train_config.for_level(data_options.level)
    if train_config.batch_size < placement.replicas:
        raise TextgenError(f"--batch-size is the global batch, shared by {placement.replicas} replicas: "
                           f"make it at least {placement.replicas}")
    data = prepare_data(data_options, train_config, tokenizer, log, progress=bool(run_options.verbose))
    if run_options.resume:
        if data.description.get("tokens") != saved.corpus.get("tokens"):
            raise TextgenError(f"the corpus is not the one run {name!r} began with "
                               f"({saved.corpus.get('tokens'):,} tokens then, {data.description['tokens']:,} "
                               "now); resume with the same sources")
        model_config, preset_record = saved.model, saved.preset
    elif start is not None:
        model_config, train_config = finetune.settings(start, model_options.dropout, train_config,
                                                       data.tokenizer.vocab_size,
                                                       model_options.embedding_dropout)
        preset_record = {}
    else:
        model_config, train_config, preset_record = _apply_preset(model_options, train_config, data,
                                                                  placement, batch_given)
    return fit_prepared(data, model_config, train_config, run_options, placement, model_dir, log, began,
                        start=start, init_from=saved.init_from if run_options.resume else None,
                        preset=preset_record)


def fit_prepared(data: PreparedData, model_config: ModelConfig, train_config: TrainConfig,
                 run_options: RunOptions, placement: Placement, model_dir: Path, log: Log,
                 began: float, *, start: Start | None = None, init_from: dict | None = None,
                 preset: dict | None = None) -> Path:
    """Train on prepared data and publish `model_dir`: what `train` does once, and `tune` per trial.
    `start` is a new fine-tuning run's base, `init_from` a resumed one's record of it, `preset`
    what the network came from."""
    run_dir = artifacts.work_dir(model_dir)
    precision = resolve_precision(train_config.precision)
    run_config = RunConfig(model=model_config, train=train_config,
                           level=data.tokenizer.level, corpus=data.description,
                           precision_used=precision, strategy_used=placement.name,
                           replicas=placement.replicas, workers=placement.workers, init_from=init_from,
                           preset=preset or {})

    if run_options.force and not run_options.resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(train_config.seed)
    apply_precision(precision)
    try:
        return _fit_and_publish(data, run_config, model_dir, run_dir, run_options, placement, log, began,
                                start)
    finally:
        apply_precision("float32")


def _apply_preset(options: ModelOptions, config: TrainConfig, data: PreparedData, placement: Placement,
                  batch_given: bool) -> tuple[ModelConfig, TrainConfig, dict]:
    """The network, optimizer, learning rate and batch size of a new run: its preset's, under what
    the user gave."""
    budget = presets.Budget(data.train.tokens, config.seq_len, config.batch_size, config.epochs,
                            config.steps_per_epoch, config.max_steps, config.time_limit, batch_given)
    devices = placement.replicas if gpu_capabilities() else 1  # replicas on CPUs share its cores
    choice = presets.resolve(options.preset, data.tokenizer.level, data.tokenizer.vocab_size, budget,
                             {**options.given(), "optimizer": config.optimizer, "lr": config.lr},
                             lambda: presets.measured_matmul_flops() * devices)
    if choice.batch_size < placement.replicas:
        raise TextgenError(f"preset {choice.preset.name} trains on batches of {choice.batch_size}, fewer "
                           f"than the {placement.replicas} replicas: give --batch-size")
    settings = dict(choice.settings)
    config = dataclasses.replace(config, batch_size=choice.batch_size)
    config = config.optimized(settings.pop("optimizer"), settings.pop("lr"), choice.preset.weight_decay)
    record = {"requested": choice.requested, "used": choice.preset.name, "description": choice.describe()}
    if choice.planned_passes is not None:
        record["planned_passes"] = round(choice.planned_passes, 2)
    end = choice.stop_at_step
    if end is not None and (config.max_steps is None or end < config.max_steps):
        # the run's own end, in steps of the whole run: kept here, not in max_steps (a session's)
        record["stop_after_passes"] = choice.stop_after_passes
        record["stop_at_step"] = end
    return ModelConfig(vocab_size=data.tokenizer.vocab_size, **settings), config, record


def _compile(model: keras.Model, config: TrainConfig) -> None:
    clip = config.clipnorm or None  # 0 (or None in a run saved before CLIPNORMS): off
    if config.optimizer == "sgd":  # PyTorch's word_language_model recipe: clip the whole gradient's norm
        optimizer = keras.optimizers.SGD(learning_rate=config.lr, global_clipnorm=clip)
    elif config.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate=config.lr, weight_decay=config.weight_decay,
                                           clipnorm=clip)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=config.lr, clipnorm=clip)
    model.compile(optimizer=optimizer, jit_compile=config.xla,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def _fit_and_publish(data: PreparedData, run_config: RunConfig, model_dir: Path, run_dir: Path,
                     options: RunOptions, placement: Placement, log: Log, began: float,
                     start: Start | None) -> Path:
    config = run_config.train
    with placement.strategy.scope():  # variables made here are mirrored on every replica
        model = build_model(run_config.model)
        _compile(model, config)
    val_ds = evaluation_dataset(data.val, config.seq_len, config.batch_size)
    if start is not None:
        init_from = finetune.begin(start, model, val_ds, run_dir, log)
        run_config = dataclasses.replace(run_config, init_from=init_from)
    elif run_config.init_from is not None:  # a resumed fine-tuning run
        finetune.restore(model, run_dir)
    # written once the run can start from them: a folder without config.json is not resumable
    artifacts.write_json_atomic(run_dir / artifacts.CONFIG_FILE, json.loads(run_config.to_json()))
    artifacts.write_text_atomic(run_dir / artifacts.TOKENIZER_FILE,
                                json.dumps(data.tokenizer.to_dict(), ensure_ascii=False))
    endless = config.steps_per_epoch is not None
    position = backup_position(run_dir / BACKUP_DIR)
    carried = carried_batches(data.train, config.seq_len, config.batch_size) \
        if config.carry_state and placement.replicas == 1 else 0
    if config.carry_state and not carried:
        log("--carry-state: " + ("the replicas would each need their own states" if placement.replicas > 1
                                 else "the text does not fit the batch's columns in memory")
            + "; training on shuffled windows instead.")
    if carried:
        steps_per_epoch = config.steps_per_epoch or carried
        carry_states(model, config.batch_size)
        first_batch = position.steps if endless else position.epoch * carried
        train_ds = carried_training_dataset(data.train, config.seq_len, config.batch_size, config.seed,
                                            first_batch=first_batch)
    else:
        steps_per_epoch = config.steps_per_epoch or data.train.batches(config.seq_len, config.batch_size)
        train_ds = training_dataset(data.train, config.seq_len, config.batch_size, config.seed,
                                    endless=endless, start_epoch=position.epoch, skip_batches=position.steps)

    val_chars_per_token = (data.val.chars or data.val.tokens) / data.val.tokens
    total_steps = config.epochs * steps_per_epoch
    session_steps = config.max_steps
    planned_end = run_config.preset.get("stop_at_step")  # auto's stop after its useful passes
    if planned_end is not None:  # steps of the whole run: a resumed session trains what is left
        total_steps = min(total_steps, planned_end)
        session_steps = min(session_steps or planned_end, planned_end - position.steps)
    budget = Budget(session_steps, config.time_limit)
    history = EpochLog(run_dir / artifacts.HISTORY_FILE, config.seq_len * config.batch_size,
                       val_chars_per_token, run_config.level)
    previous = [v for v in history.history.get("val_loss", []) if v is not None]
    schedule = (BudgetSchedule(config.lr, config.lr_schedule, total_steps=total_steps,
                               max_steps=config.max_steps, time_limit=config.time_limit)
                if config.lr_schedule != "constant" else None)
    callbacks: list[keras.callbacks.Callback] = [
        budget,
        *([schedule] if schedule is not None else []),
        # before the history: a crash between them leaves a best model whose epoch history.json
        # lacks (the resumed run repeats it), never a history claiming a best model not saved
        BestCheckpoint(run_dir / artifacts.MODEL_FILE, min(previous, default=math.inf)),
        history,
        # after the history and the best checkpoint: a crash between them repeats an epoch, and
        # never leaves a backup counting an epoch that history.json lacks
        RunBackup(run_dir / BACKUP_DIR, budget, config.backup_every, BACKUP_SECONDS),
        EarlyStopping(schedule, config.early_stopping_patience),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.TensorBoard(str(run_dir / artifacts.LOGS_DIR), write_graph=False,
                                    profile_batch=0),
    ]
    if options.verbose:
        callbacks.append(keras.callbacks.ProgbarLogger())  # explicit, so samples print after it
        if options.epoch_samples:
            callbacks.append(EpochSamples(Generator(model, data.tokenizer), log, 200, config.seed))

    params = model.count_params()
    preset_note = f"{run_config.preset['description']}; " if run_config.preset.get("description") else ""
    log(f"Training {run_config.model.cell.upper()} {run_config.model.layers}x{run_config.model.units} "
        f"({preset_note}{params:,} parameters, vocabulary {run_config.model.vocab_size:,}, "
        f"{run_config.level} level, {run_config.precision_used}, {config.optimizer} at lr {config.lr:g}, "
        f"batches of {config.batch_size} x {config.seq_len}) on "
        f"{data.train.tokens:,} tokens; validating on "
        f"{data.val.tokens:,}"
        + (f"; epochs of {config.steps_per_epoch:,} steps over the repeated text" if endless else "")
        + (f"; {placement.describe()} share each batch of {config.batch_size}"
           if placement.name != "one-device" else "") + ".")
    start = time.perf_counter()
    interrupted = False
    try:
        with CtrlCBetweenSteps() as ctrl_c:
            model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=[*callbacks, ctrl_c],
                      steps_per_epoch=steps_per_epoch, shuffle=False,
                      verbose=2 if options.verbose == 2 else ("auto" if options.verbose else 0))
    except KeyboardInterrupt:
        interrupted = True
        log("\nInterrupted: saving what was finished...")
    seconds = time.perf_counter() - start
    losses = history.history.get("loss", [])
    epochs_done = len(losses)
    stopped = _stop_reason(interrupted, budget.reason, losses, config.epochs)
    if stopped == "max_steps" and planned_end is not None and optimizer_steps(model) >= planned_end:
        stopped = "completed"  # the passes auto planned are done: nothing left to resume
    val_losses = [v for v in history.history.get("val_loss", []) if v is not None]
    # all the steps behind these weights, those of earlier (resumed) sessions included
    result = {"stopped": stopped, "epochs": epochs_done, "steps": optimizer_steps(model),
              "train_seconds": round(seconds, 2),
              # reading, tokenizing and tracing before training really starts (None: no step ran)
              "first_step_seconds": round(budget.first_step_at - began, 2) if budget.first_step_at else None,
              "best_val_loss": min(val_losses) if val_losses else None,
              "parameters": params}
    final_config = dataclasses.replace(run_config, result=result)
    if not placement.is_chief:
        log(f"{placement.task} done ({stopped} after {epochs_done} epoch(s)); the chief saves the model.")
        if interrupted:
            raise KeyboardInterrupt
        return model_dir
    with artifacts.sigint_deferred():
        _publish(model, final_config, data.tokenizer, history.history, model_dir, run_dir)
        unfinished = stopped in ("interrupted", "max_steps", "time_limit")
        if not unfinished:
            shutil.rmtree(run_dir, ignore_errors=True)
    best = f"best val_loss {result['best_val_loss']:.4f}" if val_losses else "no validation yet"
    if final_config.init_from is not None:
        best += f", {final_config.init_from['base_val_loss']:.4f} before fine-tuning"
    if not plotting_available():
        log(f"(no {CURVES_FILE}: {PLOT_EXTRA_HINT})")
    log(f"Saved {model_dir} ({stopped} after {epochs_done} epoch(s), {best})."
        + (f" Continue with --resume --name {model_dir.name}." if unfinished else ""))
    if interrupted:
        raise KeyboardInterrupt
    return model_dir


def _stop_reason(interrupted: bool, budget_reason: str | None, losses: list, epochs: int) -> str:
    """Why training ended, as recorded in config.json."""
    if interrupted:
        return "interrupted"
    if budget_reason:
        return budget_reason
    if losses and losses[-1] is not None and not math.isfinite(losses[-1]):
        return "nan_loss"
    return "early_stopping" if len(losses) < epochs else "completed"


def _publish(model: keras.Model, config: RunConfig, tokenizer: Tokenizer, history: dict,
             model_dir: Path, run_dir: Path) -> None:
    staging = artifacts.staging_dir(model_dir)
    try:
        best = run_dir / artifacts.MODEL_FILE
        model.save(staging / artifacts.LAST_FILE)
        if best.is_file() and _loads(best):
            shutil.copy2(best, staging / artifacts.MODEL_FILE)
        else:  # no completed validation yet: the current weights are all there is
            shutil.copy2(staging / artifacts.LAST_FILE, staging / artifacts.MODEL_FILE)
        tokenizer.save(staging / artifacts.TOKENIZER_FILE)
        (staging / artifacts.CONFIG_FILE).write_text(config.to_json(), encoding="utf-8")
        (staging / artifacts.HISTORY_FILE).write_text(json.dumps(history, indent=2), encoding="utf-8")
        if (run_dir / artifacts.LOGS_DIR).is_dir():
            shutil.copytree(run_dir / artifacts.LOGS_DIR, staging / artifacts.LOGS_DIR)
        if plotting_available():
            with contextlib.suppress(TextgenError):  # nothing finite to draw: no picture
                plot_history(history, model_dir.name, staging / CURVES_FILE)
        artifacts.publish(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _loads(path: Path) -> bool:
    """A checkpoint cut short by a crash must not be published as the best model."""
    try:
        keras.saving.load_model(path, compile=False, safe_mode=True)
        return True
    except Exception:
        return False
