"""What machine this is: CPU model, cores and the ISA flags that decide int8 speed (AVX2, AVX-512, VNNI)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

_INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "f16c",
                      "asimd", "asimddp", "i8mm", "sve")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """{"model": ..., "cores": N, "isa": [...]} from /proc/cpuinfo where available."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "model": model,
        "cores": os.cpu_count() or 1,
        "machine": platform.machine(),
        "isa": [f for f in _INTERESTING_FLAGS if f in flags],
    }


def cpu_description() -> str:
    info = cpu_info()
    return f"{info['model']} ({info['cores']} cores; {', '.join(info['isa']) or 'no SIMD flags read'})"
