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


def _unknown_cells(unknown: dict | None) -> str:
    """AUROC and confidently-wrong share of the unknown summary, as two table cells."""
    if not unknown:
        return "– | –"
    auroc = unknown.get("auroc_all_no_counterpart")
    wrong = unknown.get("cross_plant_confident_wrong")
    return f"{'–' if auroc is None else f'{auroc:.3f}'} | {_pct(wrong)}"


def called_as_table(called_as: dict[str, dict[str, dict[str, int]]]) -> list[str]:
    """Markdown rows: group, source class, images, then the count of each answer (unknown first)."""
    answers = sorted({a for classes in called_as.values() for row in classes.values() for a in row},
                     key=lambda a: (a != "unknown", a))
    lines = ["| set | class | images | " + " | ".join(answers) + " |",
             "|---|---|---:|" + "---:|" * len(answers)]
    for group, classes in called_as.items():
        for name, row in classes.items():
            cells = " | ".join(str(row.get(a, 0)) if row.get(a) else "·" for a in answers)
            lines.append(f"| {group} | {name} | {sum(row.values())} | {cells} |")
    return lines


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
        f"images ({report['calibration']['per_class']} per class). Gates: {_gates(report['gates'])}.",
        "Evaluated through edge_runtime (its preprocessing and interpreters), against the Keras float model on "
        "the same images.",
        "",
        "Answer = what the device reports: the class, or `unknown` above the artifact's unknown threshold (the "
        "float model's 0.95 quantile of NEU *validation* scores, moved by the artifact's median score shift on "
        "the same images). Unknown AUROC: NEU test against every cross-plant image "
        "without NEU counterpart. Confidently wrong: cross-plant images given a wrong class and not flagged.",
        "",
        "| artifact | size | load | NEU val+test | GC10 inclusion | GC10 crops | X-SDD mapped | answer agreement "
        "| top-1 agreement | unknown AUROC | confidently wrong | max Δp | gates |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| Keras float (reference) | {ref['size_mb']:.1f} MB | – | {_count(ref['groups'].get('neu'))} | "
        f"{_count(ref['groups'].get('gc10_inclusion'))} | {_count(ref['groups'].get('gc10_crops'))} | "
        f"{_count(ref['groups'].get('xsdd'))} | – | – | {_unknown_cells(ref.get('unknown'))} | – | – |",
    ]
    for a in report["artifacts"]:
        if "error" in a:
            lines.append(f"| {a['format']} ({a['engine']}) | – | – | – | – | – | – | – | – | – | – | – | "
                         f"FAIL: {a['error']} |")
            continue
        c = a["comparison"]
        g = c["groups"]
        verdict = "pass" if a["passed"] else "FAIL: " + "; ".join(a["failures"])
        lines.append(
            f"| {a['format']} (`{Path(a['file']).name}`, {a['engine']}) | {a['size_mb']:.1f} MB | {a['load_seconds']:.2f} s | "
            f"{_count(g.get('neu'))} | {_count(g.get('gc10_inclusion'))} | {_count(g.get('gc10_crops'))} | "
            f"{_count(g.get('xsdd'))} | {_pct(c.get('answer_agreement'))} | {_pct(c['agreement'])} | "
            f"{_unknown_cells(c.get('unknown'))} | {c['max_abs_dprob']:.4f} | {verdict} |"
        )
    lines += _margin_table(report["artifacts"])
    if ref.get("unknown"):
        lines += ["", "What the float model answers, per source class (with the unknown threshold):", ""]
        lines += called_as_table(ref["unknown"]["called_as"])
    lines += ["", f"Images evaluated: {report['images']}; unreadable: {len(report['unreadable'])}. "
              f"Wall time on {report['machine']}: {_timings(report)}."]
    if report.get("notes"):
        lines += ["", *[f"- {n}" for n in report["notes"]]]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, json_path


def _gates(gates: dict) -> str:
    text = (f"NEU drop ≤ {gates['max_drop_neu_pp']} pp, cross-plant drop ≤ {gates['max_drop_cross_pp']} pp, "
            f"answer agreement on NEU ≥ {gates['min_agreement_pct']} %")
    if "min_foreign_agreement_pct" in gates:
        text += (f", on other plants ≥ {gates['min_foreign_agreement_pct']} %, "
                 f"AUROC drop ≤ {gates['max_drop_auroc']}, "
                 f"new classes caught drop ≤ {gates['max_drop_caught_pp']} pp, confidently wrong rise ≤ "
                 f"{gates['max_rise_confident_wrong_pp']} pp")
    return text


def _margin_table(rows: list[dict]) -> list[str]:
    """Each gate's figure and its distance to the limit (margin; negative fails), per artifact and engine."""
    checked = [r for r in rows if r.get("margins")]
    if not checked:
        return []
    gates = list(dict.fromkeys(m["gate"] for r in checked for m in r["margins"]))
    lines = ["", "Gate margins (figure, then how far inside its limit; a negative margin fails):", "",
             "| artifact | " + " | ".join(gates) + " |", "|---|" + "---:|" * len(gates)]
    for r in checked:
        by_gate = {m["gate"]: m for m in r["margins"]}
        cells = [f"{by_gate[g]['figure']:.2f} ({by_gate[g]['margin']:+.2f})" if g in by_gate else "–" for g in gates]
        lines.append(f"| {r['format']} ({r['engine']}) | " + " | ".join(cells) + " |")
    return lines


def _timings(report: dict) -> str:
    """Where the export's time went, stage by stage: the Keras unknown-score bank, each conversion, decoding the
    check images, the Keras float reference and each artifact x engine check."""
    t = report["timings"]
    cached = " (--no-cache)" if t.get("keras_output_cache") is False else ""
    parts = []
    if "unknown_score_bank_seconds" in t:
        parts.append(f"Keras unknown-score bank {t['unknown_score_bank_seconds']:.0f} s{cached}")
    conversions = t.get("conversions") or {}
    each = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in conversions.items())
    if "onnx_process_seconds" in t:
        stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in (t.get("onnx_process_stages") or {}).items())
        each += f"; the ONNX process beside them {t['onnx_process_seconds']:.0f} s" + (f": {stages}" if stages else "")
    each = f" ({each})" if each else ""
    parts.append(f"conversion {t['convert_seconds']:.0f} s{each}")
    inside = []
    if "eval_images_decode_seconds" in t:
        inside.append(f"decoding the images {t['eval_images_decode_seconds']:.0f} s")
    if "float_reference_seconds" in t:
        inside.append(f"Keras float reference {t['float_reference_seconds']:.0f} s")
    checks = t.get("checks") or {f"{r['format']} on {r['engine']}": r["check_seconds"]
                                 for r in report["artifacts"] if "check_seconds" in r}
    inside += [f"{name} {seconds:.0f} s" for name, seconds in checks.items()]
    inner = f" ({', '.join(inside)})" if inside else ""
    parts.append(f"checks {t['check_seconds']:.0f} s{inner}")
    return "; ".join(parts) + f"; total {t['total_seconds']:.0f} s"
