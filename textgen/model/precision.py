"""Choose the Keras dtype policy (`--precision`) and apply it, with bfloat16 products on CPUs, for
the length of a run."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf

from textgen.errors import TextgenError, TextgenWarning
from textgen.model import fast_recurrent
from textgen.model.machine import measured_matmul_flops

MIN_FLOAT16_CAPABILITY = (7, 0)  # tensor cores: Volta and newer
# float32 training whose large products outside the recurrent loops take bfloat16 operands
# (fast_recurrent.bf16_products): Intel's "BF32", PyTorch's float32 matmul precision "medium"
BF16_PRODUCTS = "float32_bf16_matmul"
POLICIES = ("float32", BF16_PRODUCTS, "mixed_float16", "mixed_bfloat16")
# auto takes BF16_PRODUCTS on a CPU whose bfloat16 matmul is at least this many times faster than
# its float32 one: below the spread measured on AVX512_BF16 without AMX, where it still paid
# (bench/RESULTS.md, "bfloat16 products"); CPUs without bfloat16 hardware emulate it, slowly
MIN_BF16_SPEEDUP = 1.5
# oneDNN instruction sets without bfloat16 arithmetic: with ONEDNN_MAX_CPU_ISA set to one of them
# (emulating an older CPU on a newer one), oneDNN cannot build a bfloat16 matmul and aborts the
# process, where TensorFlow on such a CPU would have used another kernel
NO_BF16_ISAS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the visible CUDA GPUs (empty on CPU-only machines)."""
    capabilities = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


def bf16_speedup() -> float:
    """How many times faster this machine multiplies bfloat16 matrices than float32 ones (0 when
    oneDNN is limited to instructions without bfloat16)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in NO_BF16_ISAS:
        return 0.0
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


@contextlib.contextmanager
def applied(policy: str) -> Iterator[None]:
    """Models built and trained inside the block compute under `policy` (Keras' dtype policy, and
    bfloat16 products for BF16_PRODUCTS); the previous policy is back when the block ends."""
    if policy not in POLICIES:
        raise TextgenError(f"unknown precision {policy!r}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32" if policy == BF16_PRODUCTS else policy)
    try:
        with fast_recurrent.bf16_products(policy == BF16_PRODUCTS):
            yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
