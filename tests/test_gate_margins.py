"""benchmarks/gate_margins.py: every gate's figure and margin of several exports side by side, the smallest
margin per gate over them, and an exit status that says whether any export is outside a limit."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.gate_margins import main, margin_rows, tightest


def write_report(folder: Path, agreement: float, passed: bool = True) -> Path:
    folder.mkdir(parents=True)
    margins = [{"gate": "agreement_pct", "figure": agreement, "limit": 99.0, "margin": agreement - 99.0},
               {"gate": "neu_drop_pp", "figure": 0.0, "limit": 0.5, "margin": 0.5}]
    report = {"artifacts": [{"format": "tflite_int8", "engine": "litert", "passed": passed, "margins": margins},
                            {"format": "tflite_fp32", "engine": "litert", "passed": True, "margins": margins}]}
    (folder / "export_report.json").write_text(json.dumps(report))
    return folder


def test_the_smallest_margin_per_gate_comes_from_the_tightest_export(tmp_path: Path):
    reports = {name: json.loads((write_report(tmp_path / name / "export", value) / "export_report.json").read_text())
               for name, value in (("s0", 99.8), ("s1", 99.3))}
    rows = margin_rows(reports, ["tflite_int8"])
    assert {r["format"] for r in rows} == {"tflite_int8"} and len(rows) == 4
    closest = tightest(rows)[0]
    assert closest["gate"] == "agreement_pct" and closest["export"] == "s1" and abs(closest["margin"] - 0.3) < 1e-9


def test_exit_status_says_whether_any_gate_is_outside_its_limit(tmp_path: Path, capsys):
    good = write_report(tmp_path / "good" / "export", 99.5)
    bad = write_report(tmp_path / "bad" / "export", 98.0, passed=False)
    table = tmp_path / "margins.md"
    assert main([str(good), "--markdown", str(table)]) == 0
    assert "| tflite_int8 | litert | agreement_pct | 99 | 99.5 |" in table.read_text()
    assert main([str(good), str(bad)]) == 1
    assert "2 outside their limit" in capsys.readouterr().out  # bad's two artifacts, each at 98 % agreement


def test_a_folder_without_a_report_is_named(tmp_path: Path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
