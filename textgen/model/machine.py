"""How fast this machine multiplies matrices: what `auto` sizes presets and picks precision by."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

_measured: dict[str, float] = {}


def cpu_cores() -> int:
    """Cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def memory_bytes() -> int | None:
    """The machine's physical memory (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def l2_cache_bytes() -> int | None:
    """One core's level-2 cache, as Linux describes the first core's caches (None elsewhere)."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = ((index / name).read_text().strip() for name in ("level", "type"))
            if level == "2" and kind != "Instruction":
                size = (index / "size").read_text().strip().upper()
                unit = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * unit
        except (OSError, ValueError):
            continue
    return None


def measured_matmul_flops(dtype: str = "float32", size: int = 1024, seconds: float = 0.2,
                          warmup: float = 0.1) -> float:
    """FLOP/s of a `dtype` matmul on this machine's default TensorFlow device, measured once per
    process and dtype: a fast one of single products (the 90th percentile), after a warm-up.
    A process's first products run slower, switching at a different moment each time, so an
    average over so short a time swings between runs (bench/RESULTS.md, "auto's matmul rate");
    a long run sees the faster rate."""
    if dtype not in _measured:
        import tensorflow as tf

        a = tf.cast(tf.random.normal([size, size]), dtype)
        product = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), "float32")))
        rates: list[float] = []
        start = time.perf_counter()
        while (now := time.perf_counter()) - start < warmup + seconds or len(rates) < 2:
            product(a).numpy()
            if now - start >= warmup:  # traced, warmed up: time this one
                rates.append(2 * size**3 / max(time.perf_counter() - now, 1e-9))
        _measured[dtype] = statistics.quantiles(rates, n=10)[-1]
    return _measured[dtype]
