"""A run settled before anything is trained or written: its data, network, optimizer and budget,
decided once from the user's options, the preset, a base model to fine-tune, or the run being
resumed."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from textgen.errors import TextgenError
from textgen.model import presets
from textgen.model.machine import measured_matmul_flops
from textgen.model.precision import gpu_capabilities, resolve_precision
from textgen.store import artifacts
from textgen.store.config import ModelConfig, RunConfig, TrainConfig
from textgen.text.tokenizers import load_tokenizer
from textgen.training import finetune
from textgen.training.distribute import Placement
from textgen.training.finetune import Start
from textgen.training.options import DataOptions, InitOptions, Log, ModelOptions, RunOptions
from textgen.training.prepare import PreparedData, open_sources, prepare_data


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """Everything a run needs, decided: `execute` trains it and publishes `model_dir`."""

    data: PreparedData
    config: RunConfig  # config.json before the result: the network, training settings, precision
    placement: Placement
    model_dir: Path
    start: Start | None = None  # a new fine-tuning run's base
    fresh: bool = False  # start over: an unfinished run of the same name is deleted first
    verbose: int = 1
    epoch_samples: bool = True
    log: Log = print
    began: float  # perf_counter() when the run was asked for (first_step_seconds counts from it)


def settle(data: PreparedData, model: ModelConfig, train: TrainConfig, placement: Placement, model_dir: Path,
           options: RunOptions, began: float, *, start: Start | None = None, init_from: dict | None = None,
           preset: dict | None = None) -> RunPlan:
    """The plan of a run whose settings are chosen: what `train` does once, and `tune` per trial.
    `init_from` is a resumed fine-tuning run's record of its base, `preset` what the network came from."""
    config = RunConfig(model=model, train=train, level=data.tokenizer.level, corpus=data.description,
                       precision_used=resolve_precision(train.precision), strategy_used=placement.name,
                       replicas=placement.replicas, workers=placement.workers, init_from=init_from,
                       preset=preset or {})
    return RunPlan(data=data, config=config, placement=placement, model_dir=model_dir, start=start,
                   fresh=options.force and not options.resume, verbose=options.verbose,
                   epoch_samples=options.epoch_samples, log=options.logger, began=began)


def plan_run(data_options: DataOptions, model_options: ModelOptions, train_config: TrainConfig,
             options: RunOptions, placement: Placement, name: str, init: InitOptions | None) -> RunPlan:
    """Check the target and the settings, read the corpus, and decide the run: resumed, fine-tuning
    a base model, or new (the preset under the user's settings)."""
    began = time.perf_counter()
    model_dir = Path(options.output_dir) / name
    if init is not None and not options.resume:
        finetune.check_target(Path(init.model), model_dir)
    artifacts.check_target(model_dir, artifacts.work_dir(model_dir), artifacts.CONFIG_FILE, "run",
                           resume=options.resume, force=options.force)
    if options.resume:
        return _resumed(data_options, train_config, options, placement, model_dir, init, began)
    if init is not None:
        return _fine_tuning(data_options, model_options, train_config, options, placement, model_dir, init,
                            began)
    # optimizer settings that cannot work, before the corpus is read
    train_config.optimized(*presets.optimizer_and_rate(presets.PRESETS[data_options.level][0],
                                                       train_config.optimizer, train_config.lr))
    batch_given = train_config.batch_size is not None
    train_config = _windows(train_config, data_options.level, placement)
    data = prepare_data(data_options, train_config, None, options.logger, progress=bool(options.verbose))
    model_config, train_config, preset = _from_preset(model_options, train_config, data, placement,
                                                      batch_given)
    return settle(data, model_config, train_config, placement, model_dir, options, began, preset=preset)


def _resumed(data_options: DataOptions, train_config: TrainConfig, options: RunOptions, placement: Placement,
             model_dir: Path, init: InitOptions | None, began: float) -> RunPlan:
    """The unfinished run's own settings: only the budget and the machinery may change between sessions."""
    run_dir = artifacts.work_dir(model_dir)
    saved = RunConfig.load(run_dir / artifacts.CONFIG_FILE)
    if init is not None:
        finetune.check_resume(init, saved, model_dir.name)
    session = {k: getattr(train_config, k) for k in ("epochs", "max_steps", "time_limit", "backup_every",
                                                     "strategy", "cpu_devices")}
    train_config = _windows(dataclasses.replace(saved.train, **session), saved.level, placement)
    data = prepare_data(dataclasses.replace(data_options, level=saved.level), train_config,
                        load_tokenizer(run_dir / artifacts.TOKENIZER_FILE), options.logger,
                        progress=bool(options.verbose))
    if data.description.get("tokens") != saved.corpus.get("tokens"):
        raise TextgenError(f"the corpus is not the one run {model_dir.name!r} began with "
                           f"({saved.corpus.get('tokens'):,} tokens then, {data.description['tokens']:,} "
                           "now); resume with the same sources")
    return settle(data, saved.model, train_config, placement, model_dir, options, began,
                  init_from=saved.init_from, preset=saved.preset)


def _fine_tuning(data_options: DataOptions, model_options: ModelOptions, train_config: TrainConfig,
                 options: RunOptions, placement: Placement, model_dir: Path, init: InitOptions,
                 began: float) -> RunPlan:
    """A new run from a base model: its network and vocabulary (maybe extended), this run's training."""
    corpus = open_sources(data_options, bool(options.verbose))
    start = finetune.plan(init, corpus, data_options.max_vocab, train_config)
    level = start.tokenizer.level
    train_config = _windows(train_config, level, placement)
    data = prepare_data(dataclasses.replace(data_options, level=level), train_config, start.tokenizer,
                        options.logger, progress=bool(options.verbose))
    model_config, train_config = finetune.settings(start, model_options.dropout, train_config,
                                                   data.tokenizer.vocab_size, model_options.embedding_dropout)
    return settle(data, model_config, train_config, placement, model_dir, options, began, start=start)


def _windows(config: TrainConfig, level: str, placement: Placement) -> TrainConfig:
    """The level's window defaults where none were given, checked against the replicas."""
    config = config.for_level(level)
    if config.batch_size < placement.replicas:
        raise TextgenError(f"--batch-size is the global batch, shared by {placement.replicas} replicas: "
                           f"make it at least {placement.replicas}")
    return config


def _from_preset(options: ModelOptions, config: TrainConfig, data: PreparedData, placement: Placement,
                 batch_given: bool) -> tuple[ModelConfig, TrainConfig, dict]:
    """The network, optimizer, learning rate and batch size of a new run: its preset's, under what
    the user gave."""
    limits = presets.RunLimits(data.train.tokens, config.seq_len, config.batch_size, config.epochs,
                               config.steps_per_epoch, config.max_steps, config.time_limit, batch_given)
    devices = placement.replicas if gpu_capabilities() else 1  # replicas on CPUs share its cores
    choice = presets.resolve(options.preset, data.tokenizer.level, data.tokenizer.vocab_size, limits,
                             {**options.given(), "optimizer": config.optimizer, "lr": config.lr},
                             lambda: measured_matmul_flops() * devices)
    if choice.batch_size < placement.replicas:
        raise TextgenError(f"preset {choice.preset.name} trains on batches of {choice.batch_size}, fewer "
                           f"than the {placement.replicas} replicas: give --batch-size")
    settings = dict(choice.settings)
    config = dataclasses.replace(config, batch_size=choice.batch_size).optimized(
        settings.pop("optimizer"), settings.pop("lr"), choice.preset.weight_decay)
    record = {"requested": choice.requested, "used": choice.preset.name, "description": choice.describe()}
    if choice.planned_passes is not None:
        record["planned_passes"] = round(choice.planned_passes, 2)
    end = choice.stop_at_step
    if end is not None and (config.max_steps is None or end < config.max_steps):
        # the run's own end, in steps of the whole run: kept here, not in max_steps (a session's)
        record["stop_after_passes"] = choice.stop_after_passes
        record["stop_at_step"] = end
    return ModelConfig(vocab_size=data.tokenizer.vocab_size, **settings), config, record
