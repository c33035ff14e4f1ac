"""Train and publish a model folder: a plan (textgen.training.plan) -> Keras `fit` with the run's
callbacks -> the folder, assembled beside its target and renamed into place."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import keras

from textgen.errors import TextgenError
from textgen.generate.generator import Generator
from textgen.model import precision
from textgen.model.fast_recurrent import carry_states
from textgen.model.network import build_model, load_network
from textgen.store import artifacts
from textgen.store.config import RunConfig, TrainConfig
from textgen.store.plotting import CURVES_FILE, PLOT_EXTRA_HINT, plot_history, plotting_available
from textgen.text.pipeline import (
    carried_batches,
    carried_training_dataset,
    evaluation_dataset,
    training_dataset,
)
from textgen.training import finetune
from textgen.training.backup import (
    BACKUP_DIR,
    BACKUP_SECONDS,
    BackupPosition,
    RunBackup,
    backup_position,
    copy_unfinished_run,
    optimizer_steps,
)
from textgen.training.callbacks import BestCheckpoint, BudgetStop, CtrlCBetweenSteps, EpochLog, EpochSamples
from textgen.training.distribute import is_chief, place, read_cluster
from textgen.training.options import DataOptions, InitOptions, ModelOptions, RunOptions
from textgen.training.plan import RunPlan, plan_run
from textgen.training.prepare import default_name, model_name
from textgen.training.schedule import BudgetSchedule, EarlyStopping

UNFINISHED = ("interrupted", "max_steps", "time_limit")  # stop reasons that --resume continues


def train(data_options: DataOptions, model_options: ModelOptions, train_config: TrainConfig,
          run_options: RunOptions, init: InitOptions | None = None) -> Path | None:
    """Train and publish a model folder; returns its path. Ctrl-C saves what was finished.
    With `init`, the run fine-tunes a trained model (textgen.training.finetune).

    In a multi-worker run every worker trains, but only the chief writes the model folder: the
    others keep their files in a temporary folder, deleted at the end, and return None.
    """
    name = model_name(run_options.name or default_name(data_options.sources, data_options.level))
    if train_config.strategy == "multi-worker" and train_config.time_limit is not None:
        raise TextgenError("--time-limit cannot stop several workers at the same step; with --strategy "
                           "multi-worker use --max-steps or --epochs")
    if init is not None:  # found in the real output folder, which non-chief workers do not write to
        init = dataclasses.replace(init, model=str(finetune.resolve_base(init.model, run_options.output_dir)))
    if train_config.strategy != "multi-worker" or is_chief(*read_cluster()):
        placement = place(train_config.strategy, train_config.cpu_devices)  # first: it configures devices
        return execute(plan_run(data_options, model_options, train_config, run_options, placement, name,
                                init))
    with tempfile.TemporaryDirectory(prefix="textgen-worker-") as scratch:
        if run_options.resume:
            copy_unfinished_run(Path(run_options.output_dir) / name, Path(scratch) / name)
        placement = place(train_config.strategy, train_config.cpu_devices)
        worker_options = dataclasses.replace(run_options, output_dir=scratch)
        execute(plan_run(data_options, model_options, train_config, worker_options, placement, name, init))
    return None


def execute(plan: RunPlan) -> Path:
    """Train as planned and publish the model folder (the chief's part of a multi-worker run)."""
    run_dir = artifacts.work_dir(plan.model_dir)
    if plan.fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(plan.config.train.seed)
    with precision.applied(plan.config.precision_used):
        return _fit_and_publish(plan, run_dir)


class Steps(NamedTuple):
    """The run's budget in steps."""

    per_epoch: int
    total: int  # at the end of the last epoch, or of the passes auto planned (the schedule's end)
    session: int | None  # this session's --max-steps, or what is left of auto's planned passes
    planned_end: int | None  # auto's stop after its useful passes, in steps of the whole run


def _fit_and_publish(plan: RunPlan, run_dir: Path) -> Path:
    config = plan.config.train
    with plan.placement.strategy.scope():  # variables made here are mirrored on every replica
        model = build_model(plan.config.model)
        _compile(model, config)
    val_ds = evaluation_dataset(plan.data.val, config.seq_len, config.batch_size)
    run_config = _starting_weights(plan, model, val_ds, run_dir)
    # written once the run can start from them: a folder without config.json is not resumable
    artifacts.write_json_atomic(run_dir / artifacts.CONFIG_FILE, json.loads(run_config.to_json()))
    artifacts.write_text_atomic(run_dir / artifacts.TOKENIZER_FILE,
                                json.dumps(plan.data.tokenizer.to_dict(), ensure_ascii=False))
    position = backup_position(run_dir / BACKUP_DIR)
    train_ds, steps = _training_batches(plan, model, position)
    budget = BudgetStop(steps.session, config.time_limit)
    history = EpochLog(run_dir / artifacts.HISTORY_FILE, config.seq_len * config.batch_size,
                       (plan.data.val.chars or plan.data.val.tokens) / plan.data.val.tokens, run_config.level)
    callbacks = _callbacks(plan, model, run_dir, steps, budget, history)
    plan.log(_first_line(plan, run_config, model.count_params()))
    start = time.perf_counter()
    interrupted = _fit(model, train_ds, val_ds, callbacks, steps.per_epoch, plan)
    result = _result(plan, model, history.history, budget, steps, interrupted, time.perf_counter() - start)
    final_config = dataclasses.replace(run_config, result=result)
    if plan.placement.is_chief:
        _publish_run(plan, model, final_config, history.history, run_dir)
    else:
        plan.log(f"{plan.placement.task} done ({result['stopped']} after {result['epochs']} epoch(s)); the "
                 "chief saves the model.")
    if interrupted:
        raise KeyboardInterrupt
    return plan.model_dir


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


def _starting_weights(plan: RunPlan, model: keras.Model, val_ds: Any, run_dir: Path) -> RunConfig:
    """A fine-tuning run starts from its base's weights (a new run) or its own copy of them (a
    resumed one); returns the run's config with the record of the base."""
    if plan.start is not None:
        init_from = finetune.begin(plan.start, model, val_ds, run_dir, plan.log)
        return dataclasses.replace(plan.config, init_from=init_from)
    if plan.config.init_from is not None:
        finetune.restore(model, run_dir)
    return plan.config


def _training_batches(plan: RunPlan, model: keras.Model, position: BackupPosition) -> tuple[Any, Steps]:
    """The training dataset, from where the backup left off, and the run's steps: carried batches
    (--carry-state, where they can be) or shuffled windows."""
    config, data = plan.config.train, plan.data
    endless = config.steps_per_epoch is not None
    replicas = plan.placement.replicas
    carried = carried_batches(data.train, config.seq_len, config.batch_size) \
        if config.carry_state and replicas == 1 else 0
    if config.carry_state and not carried:
        plan.log("--carry-state: " + ("the replicas would each need their own states" if replicas > 1
                                      else "the text does not fit the batch's columns in memory")
                 + "; training on shuffled windows instead.")
    if carried:
        per_epoch = config.steps_per_epoch or carried
        carry_states(model, config.batch_size)
        first_batch = position.steps if endless else position.epoch * carried
        dataset = carried_training_dataset(data.train, config.seq_len, config.batch_size, config.seed,
                                           first_batch=first_batch)
    else:
        per_epoch = config.steps_per_epoch or data.train.batches(config.seq_len, config.batch_size)
        dataset = training_dataset(data.train, config.seq_len, config.batch_size, config.seed,
                                   endless=endless, start_epoch=position.epoch, skip_batches=position.steps)
    total, session = config.epochs * per_epoch, config.max_steps
    planned_end = plan.config.preset.get("stop_at_step")  # auto's stop after its useful passes
    if planned_end is not None:  # steps of the whole run: a resumed session trains what is left
        total = min(total, planned_end)
        session = min(session or planned_end, planned_end - position.steps)
    return dataset, Steps(per_epoch, total, session, planned_end)


def _callbacks(plan: RunPlan, model: keras.Model, run_dir: Path, steps: Steps, budget: BudgetStop,
               history: EpochLog) -> list[keras.callbacks.Callback]:
    config = plan.config.train
    previous = [v for v in history.history.get("val_loss", []) if v is not None]
    schedule = (BudgetSchedule(config.lr, config.lr_schedule, total_steps=steps.total,
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
        keras.callbacks.TensorBoard(str(run_dir / artifacts.LOGS_DIR), write_graph=False, profile_batch=0),
    ]
    if plan.verbose:
        callbacks.append(keras.callbacks.ProgbarLogger())  # explicit, so samples print after it
        if plan.epoch_samples:
            callbacks.append(EpochSamples(Generator(model, plan.data.tokenizer), plan.log, 200, config.seed))
    return callbacks


def _first_line(plan: RunPlan, run_config: RunConfig, params: int) -> str:
    """What the run trains, on what, and how: the line a run starts with."""
    m, t, data = run_config.model, run_config.train, plan.data
    preset_note = f"{run_config.preset['description']}; " if run_config.preset.get("description") else ""
    return (f"Training {m.cell.upper()} {m.layers}x{m.units} ({preset_note}{params:,} parameters, vocabulary "
            f"{m.vocab_size:,}, {run_config.level} level, {run_config.precision_used}, {t.optimizer} at lr "
            f"{t.lr:g}, batches of {t.batch_size} x {t.seq_len}) on {data.train.tokens:,} tokens; validating "
            f"on {data.val.tokens:,}"
            + (f"; epochs of {t.steps_per_epoch:,} steps over the repeated text" if t.steps_per_epoch else "")
            + (f"; {plan.placement.describe()} share each batch of {t.batch_size}"
               if plan.placement.name != "one-device" else "") + ".")


def _fit(model: keras.Model, train_ds: Any, val_ds: Any, callbacks: list[keras.callbacks.Callback],
         steps_per_epoch: int, plan: RunPlan) -> bool:
    """Keras' fit; returns whether Ctrl-C cut it short."""
    try:
        with CtrlCBetweenSteps() as ctrl_c:
            model.fit(train_ds, validation_data=val_ds, epochs=plan.config.train.epochs,
                      callbacks=[*callbacks, ctrl_c], steps_per_epoch=steps_per_epoch, shuffle=False,
                      verbose=2 if plan.verbose == 2 else ("auto" if plan.verbose else 0))
    except KeyboardInterrupt:
        plan.log("\nInterrupted: saving what was finished...")
        return True
    return False


def _result(plan: RunPlan, model: keras.Model, history: dict, budget: BudgetStop, steps: Steps,
            interrupted: bool, seconds: float) -> dict[str, Any]:
    """config.json's result: why the run stopped, how far it got, and its best validation loss."""
    losses = history.get("loss", [])
    stopped = _stop_reason(interrupted, budget.reason, losses, plan.config.train.epochs)
    trained = optimizer_steps(model)  # all the steps behind these weights, earlier sessions' included
    if stopped == "max_steps" and steps.planned_end is not None and trained >= steps.planned_end:
        stopped = "completed"  # the passes auto planned are done: nothing left to resume
    val_losses = [v for v in history.get("val_loss", []) if v is not None]
    # reading, tokenizing and tracing before training really starts (None: no step ran)
    first_step = round(budget.first_step_at - plan.began, 2) if budget.first_step_at else None
    return {"stopped": stopped, "epochs": len(losses), "steps": trained, "train_seconds": round(seconds, 2),
            "first_step_seconds": first_step,
            "best_val_loss": min(val_losses) if val_losses else None,
            "parameters": model.count_params()}


def _stop_reason(interrupted: bool, budget_reason: str | None, losses: list, epochs: int) -> str:
    """Why training ended, as recorded in config.json."""
    if interrupted:
        return "interrupted"
    if budget_reason:
        return budget_reason
    if losses and losses[-1] is not None and not math.isfinite(losses[-1]):
        return "nan_loss"
    return "early_stopping" if len(losses) < epochs else "completed"


def _publish_run(plan: RunPlan, model: keras.Model, config: RunConfig, history: dict, run_dir: Path) -> None:
    """Publish the model folder (a finished run's work folder goes; an unfinished one stays for
    --resume), then say what was saved."""
    result = config.result
    with artifacts.sigint_deferred():
        with artifacts.staged(plan.model_dir) as staging:
            _model_files(model, config, plan.data.tokenizer, history, run_dir, staging, plan.model_dir.name)
        if result["stopped"] not in UNFINISHED:
            shutil.rmtree(run_dir, ignore_errors=True)
    best = f"best val_loss {result['best_val_loss']:.4f}" if result["best_val_loss"] is not None \
        else "no validation yet"
    if config.init_from is not None:
        best += f", {config.init_from['base_val_loss']:.4f} before fine-tuning"
    if not plotting_available():
        plan.log(f"(no {CURVES_FILE}: {PLOT_EXTRA_HINT})")
    plan.log(f"Saved {plan.model_dir} ({result['stopped']} after {result['epochs']} epoch(s), {best})."
             + (f" Continue with --resume --name {plan.model_dir.name}." if result["stopped"] in UNFINISHED
                else ""))


def _model_files(model: keras.Model, config: RunConfig, tokenizer: Any, history: dict, run_dir: Path,
                 staging: Path, title: str) -> None:
    """What a model folder holds (textgen.store.artifacts), written into `staging`."""
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
            plot_history(history, title, staging / CURVES_FILE)


def _loads(path: Path) -> bool:
    """A checkpoint cut short by a crash must not be published as the best model."""
    try:
        load_network(path)
        return True
    except TextgenError:
        return False
