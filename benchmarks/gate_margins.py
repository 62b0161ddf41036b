"""Gate margins of several exports side by side: does a recipe leave room at every gate, whatever the seed?

    python -m benchmarks.gate_margins runs/neu-s0/export runs/neu-s1/export runs/neu-s2/export
    python -m benchmarks.gate_margins runs/*/export --formats tflite_int8 onnx_int8 --markdown margins.md

Reads each folder's ``export_report.json`` (edge-export writes it) and prints, per artifact × engine, every gate's
figure, limit and margin (how far inside the limit; negative fails), then the smallest margin of each gate over
all the exports given. Nothing is recomputed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("gate-margins")


def read_report(folder: Path) -> dict:
    path = folder / "export_report.json" if folder.is_dir() else folder
    if not path.is_file():
        raise FileNotFoundError(f"no export report here; run edge-export on the training run first")
    return json.loads(path.read_text())


def margin_rows(reports: dict[str, dict], formats: list[str] | None = None) -> list[dict]:
    """One row per export × artifact × engine × gate."""
    rows = []
    for name, report in reports.items():
        for artifact in report["artifacts"]:
            if formats and artifact["format"] not in formats:
                continue
            for gate in artifact.get("margins") or []:
                rows.append({"export": name, "format": artifact["format"], "engine": artifact["engine"],
                             "passed": artifact["passed"], **{k: gate[k] for k in ("gate", "figure", "limit",
                                                                                   "margin")}})
    return rows


def tightest(rows: list[dict]) -> list[dict]:
    """Per format × engine × gate: the smallest margin over the exports, closest to its limit (relative) first."""
    best: dict[tuple, dict] = {}
    for row in rows:
        key = (row["format"], row["engine"], row["gate"])
        if key not in best or row["margin"] < best[key]["margin"]:
            best[key] = row
    return sorted(best.values(), key=lambda r: r["margin"] / max(abs(r["limit"]), 1e-9))


def markdown(rows: list[dict], exports: list[str]) -> str:
    keys = sorted({(r["format"], r["engine"], r["gate"]) for r in rows})
    by = {(r["export"], r["format"], r["engine"], r["gate"]): r for r in rows}
    lines = ["| artifact | engine | gate | limit | " + " | ".join(exports) + " | smallest margin |",
             "|---|---|---|---:|" + "---:|" * (len(exports) + 1)]
    for fmt, engine, gate in keys:
        cells = [by.get((e, fmt, engine, gate)) for e in exports]
        present = [c for c in cells if c]
        limit = present[0]["limit"]
        figures = [f"{c['figure']:g}" if c else "–" for c in cells]
        lines.append(f"| {fmt} | {engine} | {gate} | {limit:g} | " + " | ".join(figures)
                     + f" | {min(c['margin'] for c in present):g} |")
    return "\n".join(lines)


def _name(folder: Path) -> str:
    """runs/NAME/export -> NAME; anything else as given."""
    return folder.parent.name if folder.name == "export" else str(folder)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gate_margins", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("exports", nargs="+", help="export folders (or their export_report.json)")
    p.add_argument("--formats", nargs="+", help="only these formats (default: all)")
    p.add_argument("--markdown", help="also write the table to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reports = {}
    for folder in args.exports:
        try:
            reports[_name(Path(folder))] = read_report(Path(folder))
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            print(f"{folder}: {exc}", file=sys.stderr)  # exc names the missing report or its bad JSON
            return 2
    rows = margin_rows(reports, args.formats)
    table = markdown(rows, list(reports))
    print(table)
    failing = [r for r in rows if r["margin"] < 0]
    print(f"\n{len(rows)} gate figures from {len(reports)} exports; {len(failing)} outside their limit")
    for row in tightest(rows)[:10]:
        print(f"closest: {row['format']} on {row['engine']}: {row['gate']} {row['figure']:g} (limit {row['limit']:g}, "
              f"margin {row['margin']:g}, {row['export']})")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
