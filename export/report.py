"""``export_report.md`` / ``.json``: one row per artifact, speed and accuracy side by side."""

from __future__ import annotations

import json
from pathlib import Path


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _count(group: dict | None) -> str:
    if not group or group.get("accuracy") is None:
        return "–"
    return f"{_pct(group['accuracy'])} ({group['correct']}/{group['images']})"


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    json_path = out_dir / "export_report.json"
    md_path = out_dir / "export_report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")

    ref = report["float_reference"]
    lines = [
        f"# Export report — {report['run_dir']}",
        "",
        f"Source model sha256 `{report['source_model_sha256']}`; split manifest sha256 "
        f"`{report['split_manifest_sha256']}`. Calibration: {report['calibration']['images']} training-split "
        f"images ({report['calibration']['per_class']} per class). Gates: NEU drop ≤ {report['gates']['max_drop_neu_pp']} pp, "
        f"cross-plant drop ≤ {report['gates']['max_drop_cross_pp']} pp, agreement ≥ {report['gates']['min_agreement_pct']} %.",
        "Evaluated through edge_runtime (its preprocessing and interpreters), against the Keras float model on "
        "the same images.",
        "",
        "| artifact | size | load | NEU val+test | GC10 inclusion | X-SDD mapped | agreement | max Δp | gates |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| Keras float (reference) | {ref['size_mb']:.1f} MB | – | {_count(ref['groups'].get('neu'))} | "
        f"{_count(ref['groups'].get('gc10_inclusion'))} | {_count(ref['groups'].get('xsdd'))} | – | – | – |",
    ]
    for a in report["artifacts"]:
        if "error" in a:
            lines.append(f"| {a['format']} | – | – | – | – | – | – | – | FAIL: {a['error']} |")
            continue
        g = a["comparison"]["groups"]
        verdict = "pass" if a["passed"] else "FAIL: " + "; ".join(a["failures"])
        lines.append(
            f"| {a['format']} (`{Path(a['file']).name}`) | {a['size_mb']:.1f} MB | {a['load_seconds']:.2f} s | "
            f"{_count(g.get('neu'))} | {_count(g.get('gc10_inclusion'))} | {_count(g.get('xsdd'))} | "
            f"{_pct(a['comparison']['agreement'])} | {a['comparison']['max_abs_dprob']:.4f} | {verdict} |"
        )
    lines += ["", f"Images evaluated: {report['images']}; unreadable: {len(report['unreadable'])}. "
              f"Wall time: conversion {report['timings']['convert_seconds']:.0f} s, checks "
              f"{report['timings']['check_seconds']:.0f} s, total {report['timings']['total_seconds']:.0f} s "
              f"on {report['machine']}."]
    if report.get("notes"):
        lines += ["", *[f"- {n}" for n in report["notes"]]]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, json_path
