"""The on-disk model folder: atomic writes on save, version checks on load.

    saved_models/NAME/
        model.keras      best checkpoint by validation loss (what `sample` uses)
        last.keras       weights and optimizer state at the end of the run
        tokenizer.json   vocabulary and level
        config.json      every setting, the corpus description, the format version, the result
        history.json     Keras-style per-epoch lists (loss, val_loss, ..., epoch_seconds, tokens_per_second)
        logs/            TensorBoard event files
        export/          what `textgen export` writes (the names below; textgen.export writes them)

A run in progress lives in `saved_models/.NAME.training/`; a finished folder is assembled beside
the target and swapped in with renames (`staged`), so a crash never leaves a half-written model
where a good one was. The Keras files are read by textgen.model.network (safe mode).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textgen.errors import TextgenError
from textgen.store.config import RunConfig
from textgen.text.tokenizers import Tokenizer, load_tokenizer

MODEL_FILE = "model.keras"
LAST_FILE = "last.keras"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
LOGS_DIR = "logs"
CHECKPOINTS = {"best": MODEL_FILE, "last": LAST_FILE}
# An export folder (textgen.export): read here too, so that code below the export layer can tell
# an export from a model folder
EXPORT_DIR = "export"
EXPORT_METADATA_FILE = "metadata.json"
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"


def is_export(path: Path) -> bool:
    """A `.tflite` file or a SavedModel folder (which `textgen export` writes)."""
    return path.suffix == ".tflite" or (path / "saved_model.pb").is_file()


def is_export_folder(path: Path) -> bool:
    """The folder `textgen export` writes (its files, not one of them)."""
    return (path / EXPORT_METADATA_FILE).is_file()


def work_dir(model_dir: Path) -> Path:
    """Where an unfinished run of `model_dir` keeps its state for `--resume`."""
    return model_dir.parent / f".{model_dir.name}.training"


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; ours are not
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))


_holding_ctrl_c = False  # inside sigint_deferred: an inner one holds nothing more


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block is done, so a save is never cut in half by it. Blocks nest: Ctrl-C
    is raised when the outermost one ends."""
    global _holding_ctrl_c
    if _holding_ctrl_c:
        yield
        return
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    _holding_ctrl_c = True
    try:
        yield
    finally:
        _holding_ctrl_c = False
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


OLD_MARK = ".old-"  # `.NAME.old-PID`: the previous folder, moved aside while the new one goes in


def publish(staging: Path, target: Path) -> None:
    """Replace `target` with the finished folder `staging` by renames.

    A process killed between the two renames leaves no `target`, only the previous folder under
    its `.old-` name: `recover` (run here, and wherever models are looked up) puts it back.
    """
    recover(target)
    old = target.parent / f".{target.name}{OLD_MARK}{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    for leftover in _old_copies(target):  # ours, and any left by a process killed after its swap
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in target.parent.glob(f"{glob.escape('.' + target.name)}.publish-*"):
        if not _alive(leftover.name.rsplit(".publish-", 1)[1].split("-")[0]):  # a killed publish's
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):  # not our naming, or another user's live process
        return True
    return True


def _old_copies(target: Path) -> list[Path]:
    """Previous versions of `target` moved aside by `publish`, newest last."""
    return sorted(target.parent.glob(f"{glob.escape('.' + target.name)}{OLD_MARK}*"),
                  key=lambda path: path.stat().st_mtime)


def recover(target: Path) -> None:
    """Put back the model folder a killed `publish` had moved aside, if `target` is missing."""
    if not target.exists() and (olds := _old_copies(target)):
        os.replace(olds[-1], target)


def check_target(model_dir: Path, work: Path, marker: str, what: str, *, resume: bool,
                 force: bool) -> None:
    """Refuse to overwrite or silently abandon anything before a single byte is written: `work`
    is the unfinished `what` ("run", "search") for `model_dir`, resumable once it holds `marker`."""
    recover(model_dir)  # a previous run killed while publishing moved it aside
    name, folder = model_dir.name, model_dir.parent
    if resume:
        if not (work / marker).is_file():
            raise TextgenError(f"no interrupted {what} named {name!r} in {folder} to resume")
        return
    if work.exists() and not force:
        raise TextgenError(f"an unfinished {what} named {name!r} exists in {folder}; pass --resume to "
                           "continue it or --force to start over")
    if model_dir.exists() and not force:
        raise TextgenError(f"model {name!r} already exists in {folder}; pass --force to overwrite it or "
                           "choose another --name")


def recover_all(folder: Path) -> None:
    """`recover` every model folder of `folder` that a killed `publish` left moved aside."""
    for entry in folder.glob(f".*{OLD_MARK}*"):
        recover(folder / entry.name[1:].rsplit(OLD_MARK, 1)[0])


def staging_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    # the pid lets a later publish delete the folders of processes killed while publishing
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.publish-{os.getpid()}-", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a model folder is not
    return staging


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """Assemble a folder beside `target`, then rename it into place (`publish`) when the block ends
    without an error; on any error (Ctrl-C included) the half-assembled folder is deleted and
    `target` is left as it was."""
    staging = staging_dir(target)
    try:
        yield staging
        with sigint_deferred():  # the swap of old and new is never cut in half
            publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def resolve_model_dir(model: str | os.PathLike, output_dir: str | os.PathLike = "saved_models") -> Path:
    """A model argument is a folder path, or a name inside the output folder."""
    path = Path(model).expanduser()
    candidates = [path] if path.is_absolute() or path.exists() else [path, Path(output_dir) / path]
    for candidate in candidates:
        recover(candidate)
    for candidate in candidates:
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    for candidate in candidates:
        if candidate.is_dir():
            raise TextgenError(f"{candidate}: not a textgen model folder (no {CONFIG_FILE})")
    raise TextgenError(f"{model}: no such model (looked in {', '.join(str(c) for c in candidates)})")


def read_model_folder(model_dir: Path) -> tuple[Tokenizer, RunConfig, dict]:
    """A model folder's tokenizer, config and history, checked against each other."""
    config = RunConfig.load(model_dir / CONFIG_FILE)
    tokenizer = load_tokenizer(model_dir / TOKENIZER_FILE)
    if tokenizer.vocab_size != config.model.vocab_size:
        raise TextgenError(f"{model_dir}: tokenizer and config disagree on the vocabulary size")
    return tokenizer, config, read_history(model_dir)


def checkpoint_path(model_dir: Path, checkpoint: str = "best") -> Path:
    """The Keras file of a checkpoint ("best" or "last"), which must exist."""
    if checkpoint not in CHECKPOINTS:
        raise TextgenError(f"unknown checkpoint {checkpoint!r}; choose {' or '.join(CHECKPOINTS)}")
    path = model_dir / CHECKPOINTS[checkpoint]
    if not path.is_file():
        raise TextgenError(f"{path}: missing")
    return path


def read_history(model_dir: Path) -> dict:
    """history.json of a model folder; empty if missing or unreadable (it is informative only)."""
    try:
        return json.loads((model_dir / HISTORY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
