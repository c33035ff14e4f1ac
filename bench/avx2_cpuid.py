"""Run a benchmark as on an AVX2-only CPU: every library in it sees a CPUID without AVX-512.

    python bench/avx2_cpuid.py bench/generation_speed.py          # any script and its arguments
    python bench/avx2_cpuid.py bench/training_speed.py --cells lstm,gru

The variables of `common.EMULATION_VARIABLES` limit the libraries that read them; YNNPACK
(XLA's dots) and XNNPACK (LiteRT's) read none, and choose their kernels by CPUID. This builds
bench/avx2_cpuid.c with the machine's C compiler and preloads it: CPUID then answers without
AVX-512, AMX and AVX-VNNI in the benchmark and in every process it starts, so each library picks
the code it would run on an AVX2 machine (YNNPACK's `fma3` kernels, say). Needs Linux's CPUID
faulting (`cpuid_fault` among /proc/cpuinfo's flags: Intel CPUs since Ivy Bridge, and an AMD EPYC Zen 4,
each seen under KVM).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "avx2_cpuid.c"


def build() -> Path:
    """The shared library, built once per version of its source (in the temporary folder)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    library = Path(tempfile.gettempdir()) / f"textgen-avx2-cpuid-{digest}.so"
    if not library.exists():
        partial = library.with_suffix(f".{os.getpid()}.partial")
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-Wall", "-o", str(partial),
                        str(SOURCE), "-ldl"], check=True)
        partial.replace(library)
    return library


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if "cpuid_fault" not in Path("/proc/cpuinfo").read_text(encoding="utf-8").split():
        sys.exit("avx2_cpuid: this CPU or kernel has no CPUID faulting")
    preload = " ".join(filter(None, [str(build()), os.environ.get("LD_PRELOAD")]))
    os.execve(sys.executable, [sys.executable, *sys.argv[1:]], {**os.environ, "LD_PRELOAD": preload})


if __name__ == "__main__":
    main()
