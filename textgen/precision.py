"""Choose and apply the Keras dtype policy (`--precision`)."""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from textgen.errors import TextgenError, TextgenWarning

MIN_FLOAT16_CAPABILITY = (7, 0)  # tensor cores: Volta and newer


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the visible CUDA GPUs (empty on CPU-only machines)."""
    capabilities = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


def resolve_precision(requested: str, capabilities: list[tuple[int, int]] | None = None) -> str:
    """`auto` -> mixed_float16 on GPUs with tensor cores, float32 everywhere else."""
    capabilities = gpu_capabilities() if capabilities is None else capabilities
    if requested != "auto":
        if requested.startswith("mixed") and not capabilities:
            warnings.warn(f"--precision {requested} was asked for, but no GPU was found: the CPU will "
                          "run it, usually slower than float32", TextgenWarning, stacklevel=2)
        return requested
    if capabilities and min(capabilities) >= MIN_FLOAT16_CAPABILITY:
        return "mixed_float16"
    return "float32"


def apply_precision(policy: str) -> None:
    if policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise TextgenError(f"unknown precision {policy!r}")
    keras.mixed_precision.set_global_policy(policy)
