"""Hyper-parameter search (`textgen tune`): KerasTuner's random search or Hyperband chooses the
cell, layers, units, dropout and learning rate, and every trial is a whole `train` run.

The corpus is prepared and tokenized once; each trial is then a run planned by
`plan.settle` and trained by `run.execute`, so it has train's model, compile settings, budget and
budget-shaped learning-rate schedule, and publishes an ordinary model folder inside the search's
folder. The space searched is textgen.training.search_space.
KerasTuner's oracles choose the settings and keep the search's state; textgen runs the trials.

    saved_models/.NAME.tuning/     while the search runs, and after an interruption (--resume)
        search.json, tokenizer.json   the search's settings and vocabulary
        oracle.json, tuner0.json      KerasTuner's state
        trial_N/trial.json            KerasTuner's record of trial N
        trial_N/model/                trial N's model folder, as `train` writes it
    saved_models/NAME/             the best trial's model folder, with trials.csv and trials.json

Hyperband trains the trials it promotes again from the start, for their longer budget, rather
than continuing them: every trial is then one run whose learning rate decays at its own end.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.engine.trial import Trial, TrialStatus

from textgen.errors import TextgenError
from textgen.model import presets
from textgen.store import artifacts
from textgen.store.catalog import aligned
from textgen.store.config import ModelConfig, RunConfig, TrainConfig
from textgen.text.tokenizers import load_tokenizer
from textgen.text.tokens import CACHE_MAX_TOKENS, TokenSource
from textgen.training.distribute import Placement, place
from textgen.training.options import DataOptions, Log, RunOptions
from textgen.training.plan import settle
from textgen.training.prepare import PreparedData, default_name, model_name, prepare_data
from textgen.training.run import execute
from textgen.training.search_space import FACTOR, SearchOptions, SearchSpace, hyperband_budgets

SEARCH_FILE = "search.json"
TRIALS_CSV = "trials.csv"
TRIALS_JSON = "trials.json"
TRIAL_MODEL = "model"  # a trial's model folder, inside KerasTuner's trial folder
COLUMNS = ("trial", "cell", "layers", "units", "dropout", "lr", "params", "steps", "seconds", "val_loss")
SEARCH_FORMAT = 1
SAVED_DATA_OPTIONS = ("level", "max_vocab", "encoding", "val_file")  # kept by --resume, like the space


def search_dir(model_dir: Path) -> Path:
    """Where the search for `model_dir` keeps KerasTuner's project and the trials' models."""
    return model_dir.parent / f".{model_dir.name}.tuning"


def tune(data_options: DataOptions, space: SearchSpace, train_config: TrainConfig, search: SearchOptions,
         run_options: RunOptions) -> Path | None:
    """Run the search and publish its best trial as a model folder; returns its path (None if no
    trial finished). Ctrl-C publishes the best finished trial, keeps the search for --resume,
    and raises KeyboardInterrupt."""
    log = run_options.logger
    name = model_name(run_options.name or default_name(data_options.sources, data_options.level) + "-tuned")
    model_dir = Path(run_options.output_dir) / name
    folder = search_dir(model_dir)
    artifacts.check_target(model_dir, folder, SEARCH_FILE, "search", resume=run_options.resume,
                           force=run_options.force)
    tokenizer, corpus_tokens = None, None
    if run_options.resume:  # the search's own settings; only the time budget is this session's
        data_options, space, train_config, search, corpus_tokens = _saved_search(folder, data_options, search)
        tokenizer = load_tokenizer(folder / artifacts.TOKENIZER_FILE)
    max_epochs, budgets = hyperband_budgets(search.trials) if search.tuner == "hyperband" \
        else (1, [1] * search.trials)
    if (count := space.size()) < search.trials:
        raise TextgenError(f"the search space holds only {count:,.0f} model{'s' if count > 1 else ''}; ask "
                           f"for --trials {count:,.0f} at most, or widen the ranges")
    level = data_options.level
    train_config = dataclasses.replace(train_config, strategy="one-device", cpu_devices=None,
                                       optimizer=train_config.optimizer or presets.optimizer(level))
    train_config = train_config.for_level(level)
    placement = place(train_config.strategy)
    data = prepare_data(data_options, train_config, tokenizer, log, progress=bool(run_options.verbose))
    if corpus_tokens is not None and data.description["tokens"] != corpus_tokens:
        raise TextgenError(f"the corpus is not the one search {name!r} began with ({corpus_tokens:,} tokens "
                           f"then, {data.description['tokens']:,} now); resume with the same sources")
    data = _tokenized_once(data)

    if run_options.force and not run_options.resume:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_json_atomic(folder / SEARCH_FILE, {
        "format_version": SEARCH_FORMAT, "corpus_tokens": data.description["tokens"],
        "data": {k: getattr(data_options, k) for k in SAVED_DATA_OPTIONS},
        "space": dataclasses.asdict(space), "train": dataclasses.asdict(train_config),
        "search": {k: getattr(search, k) for k in ("trials", "tuner", "max_steps")}})
    artifacts.write_text_atomic(folder / artifacts.TOKENIZER_FILE,
                                json.dumps(data.tokenizer.to_dict(), ensure_ascii=False))

    runner = _open_runner(folder, space, search, max_epochs, budgets, data, train_config, placement, log)
    log(f"Tuning on {data.train.tokens:,} tokens (vocabulary {data.tokenizer.vocab_size:,}, "
        f"{data.tokenizer.level} level); validating on {data.val.tokens:,}. "
        f"{'Random search' if search.tuner == 'random' else 'Hyperband'} of {search.trials} trials over "
        f"{space.describe()}; {runner.describe_budget()}.")
    try:
        runner.run()
    except KeyboardInterrupt:
        log("\nInterrupted: keeping the finished trials...")
        _finish(runner, model_dir, interrupted=True, log=log)
        raise
    return _finish(runner, model_dir, interrupted=False, log=log)


def _saved_search(folder: Path, data_options: DataOptions, search: SearchOptions
                  ) -> tuple[DataOptions, SearchSpace, TrainConfig, SearchOptions, int]:
    """An interrupted search's settings, with this session's sources and time budget."""
    path = folder / SEARCH_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("format_version") != SEARCH_FORMAT:
            raise ValueError(saved.get("format_version"))
        return (dataclasses.replace(data_options, **{k: saved["data"][k] for k in SAVED_DATA_OPTIONS}),
                SearchSpace(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["space"].items()}),
                TrainConfig(**{"optimizer": "adamw", **saved["train"]}),  # searches saved before SGD
                SearchOptions(**saved["search"], time_limit=search.time_limit),
                int(saved["corpus_tokens"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TextgenError(f"{path}: not a search this textgen can resume ({exc.__class__.__name__}); start "
                           "over with --force") from None


def _finish(runner: _TrialRunner, model_dir: Path, interrupted: bool, log: Log) -> Path | None:
    """Publish the best finished trial with the table of trials, and say so. A finished search
    leaves no folder behind; an interrupted one is kept for --resume."""
    finished = runner.finished()
    rows = [trial.row for trial in finished]
    search = runner.search_options
    with artifacts.sigint_deferred():
        if rows:
            _publish(finished[0].model_dir, rows, model_dir, {
                "tuner": search.tuner, "best_trial": rows[0]["trial"], "trials_finished": len(rows),
                "trials": search.trials, "space": dataclasses.asdict(runner.space),
                "max_steps": search.max_steps, "seed": runner.train_config.seed})
        if not interrupted:
            shutil.rmtree(search_dir(model_dir), ignore_errors=True)
    resume = f" Continue with --resume --name {model_dir.name}." if interrupted else ""
    if not rows:
        log(f"No trial had finished; nothing saved.{resume}")
        return None
    best = rows[0]
    log(f"Trials by validation loss ({len(rows)} of {search.trials}):")
    log("\n".join(aligned([COLUMNS, *(_cells(row) for row in rows)])))
    log(f"Saved {model_dir} (trial {best['trial']}: {best['cell'].upper()} {best['layers']}x{best['units']}, "
        f"val_loss {best['val_loss']:.4f}); the table is in {model_dir / TRIALS_CSV}.{resume}")
    return model_dir


def _tokenized_once(data: PreparedData) -> PreparedData:
    """The training and validation tokens read once and held, so trials do not tokenize again.

    A corpus beyond textgen.text.pipeline's in-memory limit stays streamed and is read on every pass,
    as `train` reads it.
    """
    def held(source: TokenSource) -> TokenSource:
        if source.tokens > CACHE_MAX_TOKENS:
            return source
        pieces = list(source.make_stream())
        ids = np.concatenate([ids for ids, _ in pieces]) if pieces else np.zeros(0, np.int32)
        lengths = np.concatenate([lengths for _, lengths in pieces]) if pieces else np.zeros(0, np.int32)
        return dataclasses.replace(source, make_stream=lambda: iter([(ids, lengths)]))

    return dataclasses.replace(data, train=held(data.train), val=held(data.val))


def _open_runner(folder: Path, space: SearchSpace, search: SearchOptions, max_epochs: int,
                 budgets: list[int], data: PreparedData, train_config: TrainConfig, placement: Placement,
                 log: Log) -> _TrialRunner:
    """KerasTuner's project in `folder`: a new search, or the interrupted one it holds."""
    # KerasTuner treats seed 0 as "choose one" and seeds its draws with consecutive integers
    # from it, so --seed values are spread apart to keep neighbouring searches unrelated
    seed = 1 + train_config.seed * 10_007
    objective = kt.Objective("val_loss", "min")
    if search.tuner == "random":
        oracle = kt.oracles.RandomSearchOracle(objective, max_trials=search.trials, seed=seed,
                                               hyperparameters=space.hyperparameters())
    else:
        oracle = kt.oracles.HyperbandOracle(objective, max_epochs=max_epochs, factor=FACTOR,
                                            hyperband_iterations=search.trials,  # enough: cut at --trials
                                            seed=seed, hyperparameters=space.hyperparameters())
        oracle.max_trials = search.trials
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "Reloading Tuner from ..."
            return _TrialRunner(oracle, folder, space, search, max_epochs, budgets, data, train_config,
                                placement, log)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # damaged JSON of a killed search
        raise TextgenError(f"{folder}: the search's state cannot be read ({exc.__class__.__name__}); start "
                           "over with --force") from None


class _TrialRunner(kt.Tuner):
    """Runs KerasTuner's trials one at a time, each as a `train` run on the prepared data.

    KerasTuner writes its state files in place, so Ctrl-C is held while it does (a resumed
    search must be able to read them) and only a trial's training is cut short by it.
    """

    def __init__(self, oracle: kt.Oracle, folder: Path, space: SearchSpace, search: SearchOptions,
                 max_epochs: int, budgets: list[int], data: PreparedData, train_config: TrainConfig,
                 placement: Placement, log: Log):
        super().__init__(oracle=oracle, directory=str(folder.parent), project_name=folder.name,
                         overwrite=False)
        self.oracle.verbose = 0  # textgen prints its own lines
        self.space = space
        self.search_options = search
        self.max_epochs = max_epochs
        self.shorter = sorted({units for units in budgets if units < max_epochs}, reverse=True)
        self.data = data
        self.train_config = train_config
        self.placement = placement
        self.log = log
        # this session's training time, shared among the trials still to run by their budgets
        remaining = sum(budgets[len(self.oracle.end_order):])
        self.seconds_per_unit = search.time_limit / remaining if search.time_limit and remaining else None

    def describe_budget(self) -> str:
        """The longest trials' budget, as the first line of the search says it."""
        search = self.search_options
        seconds = self.seconds_per_unit * self.max_epochs if self.seconds_per_unit else None
        parts = [f"{search.max_steps:,} steps" if search.max_steps else "",
                 f"{seconds:,.1f} s of training" if seconds else ""]
        budget = " or ".join(part for part in parts if part) or f"{self.train_config.epochs} epochs"
        if search.tuner == "random":
            return f"each trial at most {budget}"
        shorter = " or ".join(f"1/{self.max_epochs // units}" for units in self.shorter)
        return f"the longest trials at most {budget}, the others {shorter} of it"

    def run(self) -> None:
        """Run trials until the oracle has none left (KerasTuner's `search`, with Ctrl-C held)."""
        tensorflow_log = logging.getLogger("tensorflow")
        tensorflow_log.addFilter(_expected_retracing)
        try:
            while True:
                with artifacts.sigint_deferred():
                    trial = self.oracle.create_trial(self.tuner_id)
                if trial.status != TrialStatus.RUNNING:  # STOPPED: all trials done
                    return
                metrics = self.run_trial(trial)
                with artifacts.sigint_deferred():
                    self.oracle.update_trial(trial.trial_id, metrics)
                    trial.status = TrialStatus.COMPLETED
                    self.on_trial_end(trial)
        finally:
            tensorflow_log.removeFilter(_expected_retracing)

    def run_trial(self, trial: Trial, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Train the trial's model from the start for its budget; its objective is its best val_loss."""
        values = trial.hyperparameters.values
        units = values.get("tuner/epochs", self.max_epochs)  # Hyperband's round; a random trial: all
        share = units / self.max_epochs
        search, config = self.search_options, self.train_config
        config = dataclasses.replace(
            config, max_steps=math.ceil(search.max_steps * share) if search.max_steps else None,
            time_limit=self.seconds_per_unit * units if self.seconds_per_unit else None,
            epochs=config.epochs if search.max_steps or search.time_limit
            else math.ceil(config.epochs * share),
        ).optimized(config.optimizer, float(f"{values['lr']:.3g}"))  # drawn values, rounded to read well
        model = ModelConfig(vocab_size=self.data.tokenizer.vocab_size, cell=values["cell"],
                            layers=values["layers"], units=values["units"],
                            embedding_dim=self.space.embedding_dim, dropout=round(values["dropout"], 2))
        part = f", 1/{self.max_epochs // units} of the budget" if units < self.max_epochs else ""
        self.log(f"Trial {_number(trial)}/{search.trials}: {model.cell.upper()} "
                 f"{model.layers}x{model.units}, dropout {model.dropout:g}, lr {config.lr:g}{part}...")
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        keras.backend.clear_session()  # the previous trial's models and traced functions
        began = time.perf_counter()
        quiet = RunOptions(name=TRIAL_MODEL, output_dir=str(trial_dir), force=True, verbose=0,
                           epoch_samples=False)
        plan = settle(self.data, model, config, self.placement, trial_dir / TRIAL_MODEL, quiet, began)
        path = execute(plan)
        shutil.rmtree(artifacts.work_dir(path), ignore_errors=True)  # its backups: trials never resume
        result = RunConfig.load(path / artifacts.CONFIG_FILE).result
        loss = result["best_val_loss"]
        loss = loss if loss is not None and math.isfinite(loss) else math.inf  # diverged: the worst
        self.log(f"  val_loss {loss:.4f} after {result['steps']:,} steps "
                 f"({time.perf_counter() - began:.1f} s)")
        return {"val_loss": loss}

    def finished(self) -> list[Finished]:
        """The finished trials, best first, as their model folders record them."""
        finished = []
        for trial in self.oracle.trials.values():
            if trial.status != TrialStatus.COMPLETED:
                continue
            model_dir = Path(self.get_trial_dir(trial.trial_id)) / TRIAL_MODEL
            config = RunConfig.load(model_dir / artifacts.CONFIG_FILE)
            row = {"trial": _number(trial), "cell": config.model.cell, "layers": config.model.layers,
                   "units": config.model.units, "dropout": config.model.dropout, "lr": config.train.lr,
                   "params": config.result["parameters"], "steps": config.result["steps"],
                   "seconds": config.result["train_seconds"], "val_loss": trial.score}
            finished.append(Finished(row, model_dir))
        return sorted(finished, key=lambda trial: (trial.row["val_loss"], trial.row["trial"]))


def _expected_retracing(record: logging.LogRecord) -> bool:
    """Every trial is a new model, so TensorFlow's warning that it traces functions again is noise."""
    return "retracing" not in record.getMessage()


class Finished(NamedTuple):
    row: dict[str, Any]  # the trial's line of the table, COLUMNS
    model_dir: Path


def _number(trial: Trial) -> int:
    """Trials are numbered from 1 in the order they started (KerasTuner's ids count from 0)."""
    return int(trial.trial_id) + 1


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    return (str(row["trial"]), row["cell"], str(row["layers"]), str(row["units"]), f"{row['dropout']:.3g}",
            f"{row['lr']:.3g}", f"{row['params']:,}", f"{row['steps']:,}", f"{row['seconds']:.1f}",
            f"{row['val_loss']:.4f}")


def _publish(trial_model: Path, rows: list[dict[str, Any]], model_dir: Path, tuning: dict[str, Any]) -> None:
    """The best trial's model folder, with the trials table and a note of the search in its config."""
    with artifacts.staged(model_dir) as staging:
        shutil.copytree(trial_model, staging, dirs_exist_ok=True)
        config = RunConfig.load(staging / artifacts.CONFIG_FILE)
        config = dataclasses.replace(config, result={**config.result, "tuning": tuning})
        (staging / artifacts.CONFIG_FILE).write_text(config.to_json(), encoding="utf-8")
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        (staging / TRIALS_CSV).write_text(table.getvalue(), encoding="utf-8")
        finite = [{**row, "val_loss": row["val_loss"] if math.isfinite(row["val_loss"]) else None}
                  for row in rows]
        (staging / TRIALS_JSON).write_text(json.dumps(finite, indent=2), encoding="utf-8")
