"""The machine description that benchmark pages and the engine-choice cache carry."""

from __future__ import annotations

import pytest

from edge_runtime.system import cpu_description, cpu_generation, cpu_info


@pytest.mark.parametrize(("vendor", "family", "model", "flags", "expected"), [
    ("AuthenticAMD", 26, 2, set(), "Zen 5 (family 26, model 2)"),
    ("AuthenticAMD", 25, 17, {"avx512f"}, "Zen 4 (family 25, model 17)"),
    ("AuthenticAMD", 25, 1, {"avx2"}, "Zen 3 (family 25, model 1)"),
    ("AuthenticAMD", 23, 49, {"avx2"}, "Zen/Zen 2 (family 23, model 49)"),
    ("GenuineIntel", 6, 143, {"amx_int8"}, "family 6, model 143"),
    ("", None, None, set(), ""),
])
def test_the_cpu_generation_tells_apart_cpus_that_share_a_brand(vendor, family, model, flags, expected):
    assert cpu_generation(vendor, family, model, flags) == expected


def test_the_description_names_model_cores_and_isa_of_this_machine():
    info = cpu_info()
    text = cpu_description()
    assert text.startswith(info["model"]) and f"{info['cores']} cores" in text
    assert info["generation"] in text
    assert all(flag in text for flag in info["isa"]) or "no SIMD flags read" in text
