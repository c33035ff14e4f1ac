"""`textgen sample --interactive`: type a prime, get a continuation; `:command value` changes settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from textgen.errors import TextgenError

HELP = """Type a prime and press Enter to continue it (an empty line starts from scratch).
Commands:
  :temp T[,T...]   temperature (a list is cycled token by token)   :length N   tokens to generate
  :top-k K         sample among the K likeliest (0: off)           :top-p P    nucleus sampling (1: off)
  :penalty X       repetition penalty (1: off)                     :seed N     fixed seed (:seed off)
  :stop TEXT       add a stop sequence (:stop off clears them)     :settings   show the settings
  :label NAME      records of this label (:label off: any)         :end on|off stop where a record ends
  :help            this text                                       :quit       leave (or Ctrl-D)"""


@dataclass
class Settings:
    length: int = 300
    temperature: list[float] = field(default_factory=lambda: [0.8])
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    label: str | None = None  # for models trained on records
    stop_at_end: bool = True

    def describe(self) -> str:
        return ", ".join(f"{f.name.replace('_', '-')} {_show(getattr(self, f.name), f.name)}"
                         for f in fields(self))


def _show(value: Any, name: str) -> str:
    if name == "label":
        return "any" if value is None else repr(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(repr(v) if isinstance(v, str) else f"{v:g}" for v in value) or "none"
    return "random" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def apply_command(settings: Settings, line: str) -> tuple[Settings, str]:
    """`:name value` -> new settings and a message; raises TextgenError for a bad command."""
    name, _, value = line[1:].strip().partition(" ")
    value = value.strip()
    try:
        if name in ("temp", "temperature"):
            temps = [float(v) for v in value.split(",")]
            if any(t < 0 for t in temps):
                raise ValueError
            settings = replace(settings, temperature=temps)
        elif name == "length":
            settings = replace(settings, length=_at_least(int(value), 1))
        elif name in ("top-k", "topk"):
            settings = replace(settings, top_k=_at_least(int(value), 0))
        elif name in ("top-p", "topp"):
            top_p = float(value)
            if not 0 < top_p <= 1:
                raise ValueError
            settings = replace(settings, top_p=top_p)
        elif name == "penalty":
            settings = replace(settings, repetition_penalty=float(_at_least(float(value), 1.0)))
        elif name == "seed":
            settings = replace(settings, seed=None if value == "off" else int(value))
        elif name == "stop":
            stops = [] if value == "off" else [*settings.stop, value.replace("\\n", "\n")]
            settings = replace(settings, stop=stops)
        elif name == "label":
            settings = replace(settings, label=None if value in ("off", "") else value)
        elif name == "end":
            if value not in ("on", "off"):
                raise ValueError
            settings = replace(settings, stop_at_end=value == "on")
        elif name == "settings":
            return settings, settings.describe()
        elif name == "help":
            return settings, HELP
        else:
            raise TextgenError(f"unknown command :{name} (:help lists them)")
    except ValueError:
        raise TextgenError(f"bad value {value!r} for :{name} (:help lists the commands)") from None
    return settings, settings.describe()


def _at_least(value: float, low: float) -> Any:
    if value < low:
        raise ValueError
    return value


def run(model: Any, settings: Settings, read_line: Callable[[], str | None],
        write: Callable[[str], None]) -> None:
    """The prompt loop; returns on :quit or end of input (`read_line` returns None)."""
    write(f"{model!r}\n:help lists the commands; Ctrl-D leaves.\n")
    while True:
        write("> ")
        line = read_line()
        if line is None:
            write("\n")
            return
        line = line.rstrip("\n")
        if line.startswith(":"):
            if line.strip() in (":quit", ":q", ":exit"):
                return
            try:
                settings, message = apply_command(settings, line)
            except TextgenError as exc:
                message = f"error: {exc}"
            write(message + "\n")
            continue
        write(line)
        try:
            for pieces in model.stream(line, settings.length, temperature=settings.temperature,
                                       top_k=settings.top_k, top_p=settings.top_p,
                                       repetition_penalty=settings.repetition_penalty, stop=settings.stop,
                                       seed=settings.seed, label=settings.label,
                                       stop_at_end=settings.stop_at_end):
                write(pieces[0])
        except TextgenError as exc:  # e.g. a label the model does not know
            write(f"\nerror: {exc}")
        write("\n\n")
