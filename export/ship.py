"""Install a checked artifact as the package's default model, with its model card and split manifest."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from edge_runtime.metadata import read_metadata
from export.model_card import write_model_card

log = logging.getLogger(__name__)

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "edge_runtime" / "models"


def ship(export_dir: str | Path, fmt: str = "tflite_int8", dest: str | Path | None = None,
         waive: str | None = None) -> Path:
    """Copy the artifact to ``dest`` as ``default.<ext>`` with MODEL_CARD.md and split_manifest.csv.

    An artifact that failed a gate is refused unless ``waive`` gives the reason, which the model card then
    states next to the failed figures.
    """
    export_dir = Path(export_dir)
    report_path = export_dir / "export_report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"'{report_path}' not found: run 'edge-export RUN_DIR' first")
    report = json.loads(report_path.read_text())
    row = next((a for a in report["artifacts"] if a["format"] == fmt), None)
    if row is None:
        raise ValueError(f"{fmt} is not in {report_path}; export it with --formats {fmt}")
    if not row["passed"] and not waive:
        raise ValueError(f"{fmt} failed its accuracy gates ({'; '.join(row['failures'])}); it is not shipped "
                         "unless you state why with --waive REASON (the reason goes into the model card)")
    if not row["passed"]:
        log.warning("shipping %s although it failed %s; waiver: %s", fmt, row["failures"], waive)
    source = Path(row["file"])
    suffix = source.suffix
    dest = Path(dest) if dest else DEFAULT_MODELS_DIR
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"default{suffix}"
    shutil.copyfile(source, target)
    read_metadata(target)  # refuse to ship an artifact the runtime cannot read
    run_dir = Path(report["run_dir"])
    shutil.copyfile(run_dir / "split_manifest.csv", dest / "split_manifest.csv")
    write_model_card(dest / "MODEL_CARD.md", target, report, json.loads((run_dir / "metadata.json").read_text()),
                     json.loads((run_dir / "metrics.json").read_text()), waiver=None if row["passed"] else waive,
                     failures=row["failures"])
    return target
