"""Choose and apply the Keras dtype policy (`--precision`), and bfloat16 products on CPUs."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import keras
import tensorflow as tf

from textgen import fast_recurrent
from textgen.errors import TextgenError, TextgenWarning

MIN_FLOAT16_CAPABILITY = (7, 0)  # tensor cores: Volta and newer
# float32 training whose large products outside the recurrent loops take bfloat16 operands
# (fast_recurrent.use_bf16_products): Intel's "BF32", PyTorch's float32 matmul precision "medium"
BF16_PRODUCTS = "float32_bf16_matmul"
# auto takes BF16_PRODUCTS on a CPU whose bfloat16 matmul is at least this many times faster than
# its float32 one. AMX (Intel Sapphire Rapids and newer) measured 4.3x here; AVX512_BF16 without AMX
# (AMD Zen 4) 1.76-3.51x over eight processes, where the presets trained 1.12-1.37x faster with
# BF16_PRODUCTS, so the bar sits below that spread (at 2.0, auto flipped between runs there); CPUs
# without bfloat16 hardware emulate it, slower than float32
MIN_BF16_SPEEDUP = 1.5


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the visible CUDA GPUs (empty on CPU-only machines)."""
    capabilities = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


def bf16_speedup() -> float:
    """How many times faster this machine multiplies bfloat16 matrices than float32 ones."""
    from textgen.presets import measured_matmul_flops

    return measured_matmul_flops("bfloat16") / measured_matmul_flops("float32")


def resolve_precision(requested: str, capabilities: list[tuple[int, int]] | None = None,
                      speedup: Callable[[], float] = bf16_speedup) -> str:
    """`auto` -> mixed_float16 on GPUs with tensor cores, float32 with bfloat16 products on CPUs
    that multiply bfloat16 fast (`speedup`, measured only then), float32 everywhere else."""
    capabilities = gpu_capabilities() if capabilities is None else capabilities
    if requested != "auto":
        if requested.startswith("mixed") and not capabilities:
            warnings.warn(f"--precision {requested} was asked for, but no GPU was found: the CPU will "
                          "run it, usually slower than float32", TextgenWarning, stacklevel=2)
        return requested
    if capabilities:
        return "mixed_float16" if min(capabilities) >= MIN_FLOAT16_CAPABILITY else "float32"
    return BF16_PRODUCTS if speedup() >= MIN_BF16_SPEEDUP else "float32"


def apply_precision(policy: str) -> None:
    if policy not in ("float32", BF16_PRODUCTS, "mixed_float16", "mixed_bfloat16"):
        raise TextgenError(f"unknown precision {policy!r}")
    keras.mixed_precision.set_global_policy("float32" if policy == BF16_PRODUCTS else policy)
    fast_recurrent.use_bf16_products(policy == BF16_PRODUCTS)
