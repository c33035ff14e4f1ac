"""Shared pieces of the benchmarks: the machine (CPU and the instruction set in use, emulated or
not) and its matmul peak, measured in the same run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from textgen.datasets import tiny_shakespeare_path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHAKESPEARE = tiny_shakespeare_path()  # the copy textgen ships


def matmul_peak_gflops(size: int = 2048, seconds: float = 2.0) -> float:
    """float32 GFLOP/s of large square matmuls: the better of TensorFlow (default threads) and
    NumPy's BLAS, which here gets closer to the cores' FMA limit; the stricter bound to compare with."""
    import numpy as np
    import tensorflow as tf

    def rate(matmul, a, b) -> float:
        matmul(a, b)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            matmul(a, b)
            runs += 1
        return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9

    tf_matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    tf_rate = rate(lambda x, y: tf_matmul(x, y).numpy(), tf.random.normal([size, size]),
                   tf.random.normal([size, size]))
    a, b = np.random.default_rng(0).random((2, size, size), dtype=np.float32)
    return max(tf_rate, rate(np.matmul, a, b))


# What limits each library's instruction set: XLA, oneDNN (TensorFlow's and PyTorch's), PyTorch's
# own kernels, MKL (PyTorch's matmul, nn.GRU's and nn.RNN's products) and NumPy's OpenBLAS (whose
# matmul sets the peak: Haswell is AVX2 with FMA). XLA's dots run in YNNPACK, which reads none of
# them: `--xla_cpu_experimental_ynn_fusion_type=` turns it off, and XLA's dots then run in oneDNN
EMULATION_VARIABLES = ("XLA_FLAGS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                       "OPENBLAS_CORETYPE")
YNNPACK_OFF = "--xla_cpu_experimental_ynn_fusion_type="


def cpuid_features() -> dict[str, bool] | None:
    """The instruction sets CPUID reports to this process, as NumPy read them at import: what
    libraries choose their kernels by, narrower than /proc/cpuinfo's flags under
    bench/avx2_cpuid.py."""
    import importlib

    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # NumPy 2, 1
        try:
            return dict(importlib.import_module(module).__cpu_features__)
        except (ImportError, AttributeError):
            continue
    return None


def machine() -> dict:
    """The CPU, its widest vector instructions, and the limits set to emulate a narrower one (e.g.
    XLA_FLAGS="--xla_cpu_max_isa=AVX2 --xla_cpu_experimental_ynn_fusion_type="
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
    OPENBLAS_CORETYPE=Haswell on an AVX-512 machine, or bench/avx2_cpuid.py for every library).
    Under `--xla_cpu_max_isa` with YNNPACK on, `isa_limits_missed` says that XLA's dots still ran
    AVX-512 code."""
    model, flags = "unknown", set()
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("model name") and model == "unknown":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    seen = cpuid_features()
    avx512 = "avx512f" in flags if seen is None else seen.get("AVX512F", False)
    isa = ("AVX-512 with AMX" if avx512 and "amx_tile" in flags else "AVX-512" if avx512
           else "AVX2" if "avx2" in flags else "older than AVX2")
    limits = {name: os.environ[name] for name in EMULATION_VARIABLES if name in os.environ}
    if "avx512f" in flags and not avx512:
        limits["cpuid"] = f"AVX-512 hidden by bench/avx2_cpuid.py ({os.environ.get('LD_PRELOAD', '')})"
    found = {"cpu": model, "cores": len(os.sched_getaffinity(0)), "isa": isa, "isa_limits": limits or None}
    xla_flags = limits.get("XLA_FLAGS", "").split()
    if (any(flag.startswith("--xla_cpu_max_isa") for flag in xla_flags) and YNNPACK_OFF not in xla_flags
            and avx512):
        found["isa_limits_missed"] = f"YNNPACK (XLA's dots) ignores --xla_cpu_max_isa; add {YNNPACK_OFF}"
    return found
