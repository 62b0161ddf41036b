"""What machine this is: CPU model, generation, cores and the ISA flags that decide int8 speed (AVX2, AVX-512,
VNNI, AMX)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

_INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "avx512_bf16",
                      "f16c", "asimd", "asimddp", "i8mm", "sve")


# Virtual machines often report a bare brand ("AMD EPYC"), so the x86 family and model numbers tell generations
# apart. Only families whose numbers name one generation are named; the rest are given as numbers.
_AMD_FAMILIES = {23: "Zen/Zen 2", 26: "Zen 5"}


def cpu_generation(vendor: str, family: int | None, model: int | None,
                   flags: set[str] | frozenset[str] = frozenset()) -> str:
    """A short name for an x86 CPU's generation from /proc/cpuinfo's numbers: 'Zen 5 (family 26, model 2)'.

    Empty when the numbers are unknown (other architectures)."""
    if family is None:
        return ""
    numbers = f"family {family}, model {model}"
    name = ""
    if vendor == "AuthenticAMD":
        if family == 25:  # Zen 3 and Zen 4 share the family; only Zen 4 has AVX-512
            name = "Zen 4" if "avx512f" in flags else "Zen 3"
        else:
            name = _AMD_FAMILIES.get(family, "")
    return f"{name} ({numbers})" if name else numbers


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """{"model", "generation", "cores", "machine", "isa"} from /proc/cpuinfo where available."""
    model, flags = platform.processor() or platform.machine(), set()
    numbers: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
                elif key in ("vendor_id", "cpu family", "model") and key not in numbers:
                    numbers[key] = value.strip()
    except OSError:
        pass
    family, model_number = (_as_int(numbers.get(k)) for k in ("cpu family", "model"))
    return {
        "model": model,
        "generation": cpu_generation(numbers.get("vendor_id", ""), family, model_number, flags),
        "cores": os.cpu_count() or 1,
        "machine": platform.machine(),
        "isa": [f for f in _INTERESTING_FLAGS if f in flags],
    }


def _as_int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def cpu_description() -> str:
    info = cpu_info()
    generation = f", {info['generation']}" if info["generation"] else ""
    return f"{info['model']} ({info['cores']} cores{generation}; {', '.join(info['isa']) or 'no SIMD flags read'})"
