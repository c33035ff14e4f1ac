"""`textgen train` and `textgen tune`: parse the options, call textgen.api.train / tune."""

from __future__ import annotations

import click

from textgen.cli.params import POSITIVE, Span, given, start_tensorflow, text_options, text_settings
from textgen.errors import TextgenError
from textgen.model.presets import CHOICES as PRESET_CHOICES
from textgen.store.config import CELLS, LR_SCHEDULES, OPTIMIZERS, ModelConfig, TrainConfig

TIME_LIMIT = click.FloatRange(0, min_open=True)


@click.command()
@click.argument("sources", nargs=-1, required=True)
@text_options
@click.option("--preset", type=click.Choice(PRESET_CHOICES), default="auto", show_default=True,
              help="Network size and learning rate: tiny, small, medium, large, xlarge (see the README for "
                   "what each reaches), or auto: the largest that --time-limit lets read the text "
                   "often enough (small without a time limit). Options marked 'preset' override it.")
@click.option("--cell", type=click.Choice(CELLS), default=None,
              help="Recurrent layer type (Keras LSTM, GRU, SimpleRNN). [default: preset]")
@click.option("--layers", type=POSITIVE, default=None, help="[default: preset]")
@click.option("--units", type=POSITIVE, default=None, help="Units per layer. [default: preset]")
@click.option("--embedding-dim", type=POSITIVE, default=None, help="[default: preset]")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Dropout after each recurrent layer. [default: preset]")
@click.option("--embedding-dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Dropout on the embedded tokens (as PyTorch's word_language_model). [default: 0]")
@click.option("--tie-weights/--no-tie-weights", default=None,
              help="Score tokens with the embedding matrix (needs --embedding-dim equal to --units). "
                   "[default: preset: on for word models]")
@click.option("--steps-per-epoch", type=POSITIVE, default=None,
              help="An epoch is this many steps over the text repeated endlessly (default: one pass).")
@click.option("--carry-state/--no-carry-state", default=TrainConfig.carry_state, show_default=True,
              help="Each batch continues the text of the one before and starts from its final "
                   "recurrent state (truncated backpropagation through time), instead of shuffled "
                   "windows that start from zeros.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="The peak learning rate. [default: preset]")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=TrainConfig.lr_schedule,
              show_default=True,
              help="wsd: warm up, hold --lr, then decay to a tenth of it over the last quarter of the "
                   "budget (epochs, --max-steps or --time-limit, whichever ends first); cosine: decay "
                   "over the whole budget; constant: --lr throughout.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
              help="adamw (Adam with --weight-decay), or sgd: plain SGD, whose --lr is of another scale "
                   "(PyTorch's word_language_model trains at 20 with --clipnorm 0.25). "
                   "[default: preset: adamw for char, sgd for word]")
@click.option("--clipnorm", type=click.FloatRange(0), default=None,
              help="Gradient clipping norm (0 turns clipping off): each weight's gradient with adamw, "
                   "all of them together with sgd. [default: 1 with adamw, 0.25 with sgd]")
@click.option("--weight-decay", type=click.FloatRange(0), default=None,
              help="AdamW's decoupled weight decay (0: plain Adam; sgd has none). [default: preset: "
                   "0.3 for char large, 0.1 otherwise]")
@click.option("--xla/--no-xla", default=TrainConfig.xla, show_default=True,
              help="Compile the training step with XLA (on CPUs it speeds LSTM up a little and slows "
                   "GRU down; on GPUs, Keras keeps cuDNN layers out of XLA).")
@click.option("--max-steps", type=POSITIVE, default=None, help="Stop after this many steps, then save.")
@click.option("--time-limit", type=TIME_LIMIT, default=None,
              help="Stop after this many seconds of training, then save.")
@click.option("--strategy", type=click.Choice(["auto", "one-device", "mirrored", "multi-worker"]),
              default=TrainConfig.strategy, show_default=True,
              help="tf.distribute strategy. auto: mirrored over several GPUs (or --cpu-devices), else "
                   "one device; multi-worker reads TF_CONFIG. --batch-size is the global batch.")
@click.option("--cpu-devices", type=POSITIVE, default=None,
              help="Split the CPU into N logical devices, for --strategy mirrored without GPUs.")
@click.option("--backup-every", type=POSITIVE, default=None,
              help="Back the run up every N steps for --resume (default: after each epoch, and "
                   "every 10 minutes within one).")
@click.option("--name", default=None, help="Model folder name (default: from the corpus and level).")
@click.option("--force", is_flag=True, help="Overwrite an existing model of the same name.")
@click.option("--resume", is_flag=True, help="Continue an unfinished run of the same name.")
@click.option("--samples/--no-samples", default=True, show_default=True,
              help="Print a short sample after each epoch.")
@click.option("--init-from", metavar="MODEL", default=None,
              help="Fine-tune: start from this trained model (a folder, or a name in --output-dir), "
                   "keeping its architecture, level and vocabulary; the optimizer starts fresh and "
                   "the training settings are this run's.")
@click.option("--init-checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which of the base model's weights --init-from starts from.")
@click.option("--extend-vocab", is_flag=True,
              help="With --init-from: add the new corpus's tokens that the base vocabulary lacks (up to "
                   "--max-vocab) instead of reading them as <unk>.")
@click.pass_context
def train(ctx: click.Context, sources: tuple[str, ...], **values) -> None:
    """Train a model on text files, folders of .txt files, or tfds:NAME.

    \b
    Example:
      textgen train corpus.txt --cell lstm --epochs 10 --time-limit 600
      textgen train tfds:tiny_shakespeare --level word
      textgen train new.txt --init-from corpus-char --lr 5e-4 --name new-char
    """
    if values["init_from"] is None and (values["extend_vocab"] or given(ctx, "init_checkpoint")):
        raise TextgenError("--extend-vocab and --init-checkpoint go with --init-from MODEL")
    settings = text_settings(values)
    for name in ("level", "max_vocab"):  # a base model fixes these: only what the user gave is checked
        settings[name] = settings[name] if given(ctx, name) else None
    start_tensorflow(training=True)
    from textgen.api import train as run_training

    epoch_samples = values.pop("samples")
    run_training(list(sources), **settings, **values, epoch_samples=epoch_samples, log=click.echo)


@click.command()
@click.argument("sources", nargs=-1, required=True)
@text_options
@click.option("--trials", type=POSITIVE, default=10, show_default=True, help="Models to train and compare.")
@click.option("--tuner", type=click.Choice(["random", "hyperband"]), default="random", show_default=True,
              help="KerasTuner's random search, or Hyperband: many short trials, the best trained longer.")
@click.option("--cells", default=",".join(CELLS), show_default=True, help="Cells to try, comma-separated.")
@click.option("--layers", type=Span(), default=None, help="Layers (default 1:3 for char, 1:2 for word).")
@click.option("--units", type=Span(), default=None,
              help="Units per layer, tried as MIN, 2*MIN, 4*MIN ... up to MAX (default 64:512 for char, "
                   "128:512 for word).")
@click.option("--dropout", type=Span(), default=None,
              help="Dropout after each layer (default 0:0.3 for char, 0:0.5 for word).")
@click.option("--lr", type=Span(), default=None,
              help="Peak learning rate, drawn on a log scale: AdamW's for char (default 0.0005:0.01), "
                   "SGD's for word (default 5:40).")
@click.option("--max-steps", type=POSITIVE, default=None,
              help="Training steps of each trial (with Hyperband: of its longest trials).")
@click.option("--time-limit", type=TIME_LIMIT, default=None,
              help="Seconds of training for the whole search, shared among its trials (validating and "
                   "saving each trial come on top).")
@click.option("--embedding-dim", type=POSITIVE, default=ModelConfig.embedding_dim, show_default=True,
              help="Not searched: every trial has it.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=TrainConfig.lr_schedule,
              show_default=True, help="As for train, shaped by each trial's budget.")
@click.option("--clipnorm", type=click.FloatRange(0), default=None,
              help="As for train (0: off). [default: 1 for char (adamw), 0.25 for word (sgd)]")
@click.option("--name", default=None, help="Model folder name (default: from the corpus and level, -tuned).")
@click.option("--force", is_flag=True, help="Replace an existing model; start an unfinished search anew.")
@click.option("--resume", is_flag=True, help="Continue an interrupted search of the same name.")
def tune(sources: tuple[str, ...], cells: str, **values) -> None:
    """Search for the best cell, layers, units, dropout and learning rate, and save the best model.

    \b
    Example:
      textgen tune corpus.txt --trials 20 --time-limit 3600
      textgen tune corpus.txt --tuner hyperband --trials 23 --max-steps 2000 --cells gru,lstm
    """
    settings = text_settings(values)
    start_tensorflow(training=True)
    from textgen.api import tune as run_search

    run_search(list(sources), cells=[c.strip() for c in cells.split(",") if c.strip()], **settings, **values,
               log=click.echo)
