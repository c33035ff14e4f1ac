"""training_curves.png: loss and validation loss per epoch, bits per character on a second axis."""

from __future__ import annotations

import math
from pathlib import Path

from textgen.errors import TextgenError

CURVES_FILE = "training_curves.png"
PLOT_EXTRA_HINT = 'plotting needs matplotlib: pip install "keras-textgen[plot]"'


def plotting_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_history(history: dict[str, list], title: str, path: Path) -> Path:
    """Draw the curves of `history` (Keras-style per-epoch lists) into a PNG at `path`."""
    if not plotting_available():
        raise TextgenError(PLOT_EXTRA_HINT)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    losses = _finite(history.get("loss") or [])
    val = _finite(history.get("val_loss") or [])
    if not any(math.isfinite(v) for v in losses + val):
        raise TextgenError("no finished epoch with a finite loss to plot")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(range(1, len(losses) + 1), losses, "o-", label="loss (train)")
    if val:
        ax.plot(range(1, len(val) + 1), val, "s-", label="val_loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    # Bits per character are the loss rescaled (per token -> per character, nats -> bits).
    pairs = [(b, v) for b, v in zip(_finite(history.get("val_bits_per_char") or []), val, strict=False)
             if math.isfinite(b) and math.isfinite(v) and v]
    if pairs:
        scale = pairs[-1][0] / pairs[-1][1]
        ax.secondary_yaxis("right", functions=(lambda x: x * scale, lambda y: y / scale)).set_ylabel(
            "bits per character")
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _finite(values: list) -> list[float]:
    """None, NaN and infinities (a diverged run) become gaps in the curve."""
    return [v if v is not None and math.isfinite(v) else math.nan for v in values]
