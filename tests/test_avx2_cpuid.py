"""bench/avx2_cpuid.py: a process and its children see a CPUID without AVX-512; other faults
still reach their own handlers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
FLAGS = Path("/proc/cpuinfo").read_text(encoding="utf-8").split() if Path("/proc/cpuinfo").exists() else []
pytestmark = pytest.mark.skipif("avx512f" not in FLAGS or "cpuid_fault" not in FLAGS,
                                reason="needs an AVX-512 CPU with CPUID faulting (Linux)")

# run with bench/ on PYTHONPATH, which the child inherits
FEATURES = """
import json, subprocess, sys
from common import cpuid_features
seen = cpuid_features()
ask = "from common import cpuid_features; print(cpuid_features()['AVX512F'])"
child = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, check=True).stdout.strip()
print(json.dumps({"avx2": seen["AVX2"], "fma3": seen["FMA3"], "avx512f": seen["AVX512F"], "child": child}))
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(BENCH)})


def test_the_process_and_its_children_see_avx2_without_avx512():
    native = run("-c", FEATURES)
    emulated = run(str(BENCH / "avx2_cpuid.py"), "-c", FEATURES)
    assert native.returncode == 0 and emulated.returncode == 0, emulated.stderr
    assert '"avx512f": true' in native.stdout and '"child": "True"' in native.stdout
    assert emulated.stdout.strip() == '{"avx2": true, "fma3": true, "avx512f": false, "child": "False"}'


def test_a_real_segfault_still_reaches_pythons_handler():
    crash = run(str(BENCH / "avx2_cpuid.py"), "-Xfaulthandler", "-c", "import ctypes; ctypes.string_at(8)")
    assert crash.returncode == -11 and "Fatal Python error: Segmentation fault" in crash.stderr
