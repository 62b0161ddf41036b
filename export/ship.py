"""Install checked artifacts as the package's shipped models: the default model, any extra artifacts that
``--engine auto`` may pick instead (models/manifest.json), the model card and the split manifest."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from edge_runtime.fileio import file_sha256 as sha256_of
from edge_runtime.metadata import read_metadata
from edge_runtime.shipped import MANIFEST_NAME, MANIFEST_SCHEMA, default_model_path
from export.model_card import write_model_card

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".tflite", ".onnx")


def shipped_name(fmt: str, suffix: str, first: bool) -> str:
    """``default.<ext>`` for the default model, ``<format>.<ext>`` for the others (e.g. onnx_int8.onnx)."""
    return f"default{suffix}" if first else f"{fmt}{suffix}"


def ship(export_dir: str | Path, formats: str | list[str] = "tflite_int8", dest: str | Path | None = None,
         waive: str | None = None) -> Path:
    """Copy the artifacts of ``formats`` (the first becomes the default model) to ``dest`` with MODEL_CARD.md,
    split_manifest.csv and manifest.json (gate status per engine, read by ``--engine auto``).

    An artifact that failed a gate on every engine is refused unless ``waive`` gives the reason, which the
    model card then states next to the failed figures; engines it failed on are recorded as "fail" (or
    "waived" for the format's own engine when waived) and are never picked automatically.
    """
    export_dir = Path(export_dir)
    formats = [formats] if isinstance(formats, str) else list(formats)
    report_path = export_dir / "export_report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"'{report_path}' not found: run 'edge-export RUN_DIR' first")
    report = json.loads(report_path.read_text())
    chosen = [(fmt, _rows_of(report, fmt, report_path)) for fmt in formats]
    for fmt, rows in chosen:
        if not any(r["passed"] for r in rows) and not waive:
            raise ValueError(f"{fmt} failed its accuracy gates ({'; '.join(rows[0]['failures'])}); it is not "
                             "shipped unless you state why with --waive REASON (the reason goes into the model card)")
    dest = Path(dest) if dest else default_model_path().parent
    dest.mkdir(parents=True, exist_ok=True)
    entries, targets = [], []
    for index, (fmt, rows) in enumerate(chosen):
        source = Path(rows[0]["file"])
        target = dest / shipped_name(fmt, source.suffix, index == 0)
        shutil.copyfile(source, target)
        read_metadata(target)  # refuse to ship an artifact the runtime cannot read
        gates = {r["engine"]: "pass" if r["passed"] else "fail" for r in rows}
        if waive and not any(r["passed"] for r in rows):
            gates[rows[0]["engine"]] = "waived"
            log.warning("shipping %s although it failed %s; waiver: %s", fmt, rows[0]["failures"], waive)
        entry = {"file": target.name, "format": fmt, "sha256": sha256_of(target),
                 "size_bytes": target.stat().st_size, "gates": gates}
        if "waived" in gates.values():
            entry["waivers"] = {e: waive for e, g in gates.items() if g == "waived"}
        entries.append(entry)
        targets.append(target)
    manifest = {"schema": MANIFEST_SCHEMA, "default": targets[0].name, "artifacts": entries,
                "source_model_sha256": report["source_model_sha256"], "export_report_created": report["created"]}
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    for stale in sorted(dest.iterdir()):  # the folder holds exactly what the manifest lists
        if stale.suffix in MODEL_SUFFIXES and stale not in targets:
            log.info("removing %s: not in the new manifest", stale)
            stale.unlink()
    run_dir = Path(report["run_dir"])
    shutil.copyfile(run_dir / "split_manifest.csv", dest / "split_manifest.csv")
    first_rows = chosen[0][1]
    waived = not any(r["passed"] for r in first_rows)
    config_path = run_dir / "config.json"
    training = json.loads(config_path.read_text()) if config_path.is_file() else {}
    write_model_card(dest / "MODEL_CARD.md", targets, report, json.loads((run_dir / "metadata.json").read_text()),
                     json.loads((run_dir / "metrics.json").read_text()), waiver=waive if waived else None,
                     failures=first_rows[0]["failures"], training=training)
    return targets[0]


def _rows_of(report: dict, fmt: str, report_path: Path) -> list[dict]:
    rows = [a for a in report["artifacts"] if a["format"] == fmt]
    if not rows:
        raise ValueError(f"{fmt} is not in {report_path}; export it with --formats {fmt}")
    return rows
