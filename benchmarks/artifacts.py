"""What to measure: the artifacts of an export folder, their accuracy figures, and the Keras reference.

Artifacts come from ``export_report.json`` (one row per format, including those moved to ``rejected/``
for failing a gate, with NEU / GC10 / X-SDD accuracy and agreement with float), plus any file of the
format table (:data:`export.formats.FORMATS`) found in the folder or in ``rejected/`` but not in the report.
Without a report, every ``*.tflite``/``*.onnx`` there is measured, named by the format table where it can
be. An artifact listed but not found keeps its row, with an error.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.backends import SUFFIX_ENGINES
from export.formats import FORMATS

log = logging.getLogger(__name__)

REPORT_NAME = "export_report.json"
REJECTED_DIR = "rejected"
KERAS_NAME = "keras_float"
ACCURACY_GROUPS = ("neu", "gc10_inclusion", "xsdd")


@dataclass
class Artifact:
    name: str  # format name (export.formats), the file name for unknown files, or KERAS_NAME
    path: Path | None  # the file to measure; None when it was not found
    engine: str
    quantized: bool
    listed_as: str | None = None  # the file as the report lists it
    rejected: bool = False  # in rejected/: failed a gate at export
    error: str | None = None  # why it cannot be measured (missing file)
    accuracy: dict = field(default_factory=dict)  # see accuracy_from_row

    @property
    def is_reference(self) -> bool:
        return self.name == KERAS_NAME


def read_report(export_dir: Path) -> dict | None:
    path = export_dir / REPORT_NAME
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
        if not isinstance(report.get("artifacts"), list):
            raise ValueError("no 'artifacts' list")
        return report
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s); measuring the model files found instead", path, exc)
        return None


def accuracy_from_row(row: dict) -> dict:
    """NEU / GC10 inclusion / X-SDD accuracy, agreement with float and the gate verdict of one report row."""
    comparison = row.get("comparison") or {}
    groups = comparison.get("groups") or {}
    failures = list(row.get("failures") or [])
    return {
        **{g: _group(groups.get(g)) for g in ACCURACY_GROUPS},
        "agreement": comparison.get("agreement"),
        "answer_agreement": comparison.get("answer_agreement"),
        "max_abs_dprob": comparison.get("max_abs_dprob"),
        "passed": row.get("passed"),
        "failures": failures,
        "gates": "pass" if row.get("passed") else "FAIL" + (f" ({_short(failures)})" if failures else ""),
    }


def reference_accuracy(report: dict) -> dict:
    groups = (report.get("float_reference") or {}).get("groups") or {}
    return {**{g: _group(groups.get(g)) for g in ACCURACY_GROUPS}, "agreement": None, "max_abs_dprob": None,
            "passed": None, "failures": [], "gates": "reference"}


def _group(group: dict | None) -> dict | None:
    if not group or group.get("accuracy") is None:
        return None
    return {"accuracy": group["accuracy"], "correct": group.get("correct"), "images": group.get("images")}


def _short(failures: list[str]) -> str:
    """'top-1 agreement with float 94.39 % < 99.0 %' -> 'agreement'; 'xsdd accuracy ...' -> 'xsdd'."""
    names = []
    for failure in failures:
        if "agreement" in failure:
            names.append("agreement")
        elif failure.split(" ", 1)[0] in ACCURACY_GROUPS:
            names.append(failure.split(" ", 1)[0])
        else:
            names.append("error")
    return ", ".join(dict.fromkeys(names))


def _resolve(export_dir: Path, listed: str) -> Path | None:
    """The report's path may be relative to where edge-export ran; look in the export folder first."""
    listed_path = Path(listed)
    in_rejected = REJECTED_DIR in listed_path.parts[-2:-1]
    candidates = [export_dir / REJECTED_DIR / listed_path.name, export_dir / listed_path.name]
    if not in_rejected:
        candidates.reverse()
    candidates.append(listed_path)
    return next((c for c in candidates if c.is_file()), None)


def _artifact_for_file(path: Path, name: str | None = None) -> Artifact:
    fmt = next((f for f in FORMATS.values() if f.filename == path.name), None)
    return Artifact(
        name=name or (fmt.name if fmt else path.name),
        path=path,
        engine=fmt.engine if fmt else SUFFIX_ENGINES.get(path.suffix.lower(), "unknown"),
        quantized=fmt.quantized if fmt else False,
        rejected=path.parent.name == REJECTED_DIR,
    )


def discover(export_dir: Path, formats: list[str] | None = None) -> tuple[list[Artifact], dict | None]:
    """The artifacts to measure (in the format table's order) and the export report (None without one)."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise FileNotFoundError(f"export folder '{export_dir}' not found; run 'edge-export RUN_DIR' first")
    report = read_report(export_dir)
    found: dict[str, Artifact] = {}
    for row in (report or {}).get("artifacts", []):
        fmt_name = str(row.get("format"))
        fmt = FORMATS.get(fmt_name)
        listed = str(row.get("file") or (fmt.filename if fmt else fmt_name))
        path = _resolve(export_dir, listed)
        default_engine = fmt.engine if fmt else SUFFIX_ENGINES.get(Path(listed).suffix.lower(), "unknown")
        engine = str(row.get("engine") or default_engine)
        # one row per engine that runs the file: the format's own engine keeps the format's name
        name = fmt_name if engine == default_engine else f"{fmt_name}@{engine}"
        artifact = Artifact(
            name=name, path=path, listed_as=listed,
            engine=engine,
            quantized=bool(row.get("quantized", fmt.quantized if fmt else False)),
            rejected=REJECTED_DIR in Path(listed).parts or (path is not None and path.parent.name == REJECTED_DIR),
            accuracy=accuracy_from_row(row),
        )
        if path is None:
            artifact.error = f"file not found: {listed} (looked in {export_dir} and {export_dir / REJECTED_DIR})"
        found[name] = artifact
    for folder in (export_dir, export_dir / REJECTED_DIR):
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIX_ENGINES and p.is_file())
        for path in files:
            artifact = _artifact_for_file(path)
            if artifact.name not in found and all(a.path != path for a in found.values()):
                found[artifact.name] = artifact
    wanted = list(formats) if formats and formats != ["all"] else None
    if wanted:
        unknown = [n for n in wanted if n not in found and n not in FORMATS]
        if unknown:
            raise ValueError(f"unknown format(s) {unknown}; choose from {sorted(set(FORMATS) | set(found))} or 'all'")
        for name in wanted:
            if name not in found:
                fmt = FORMATS.get(name)
                found[name] = Artifact(name, None, fmt.engine if fmt else "unknown", bool(fmt and fmt.quantized),
                                       error=f"not found in {export_dir}"
                                       + (f" (expected {fmt.filename})" if fmt else ""))
        found = {n: a for n, a in found.items() if n in wanted}
    order = list(FORMATS)

    def rank(artifact: Artifact) -> tuple[int, str]:
        base = artifact.name.split("@")[0]
        return (order.index(base) if base in order else len(order), artifact.name)

    ranked = sorted(found.values(), key=rank)
    return ranked, report


def keras_reference(export_dir: Path, report: dict | None) -> tuple[Artifact | None, dict | None, str | None]:
    """The run's Keras float model (``EXPORT_DIR/../model.keras``) with its preprocessing, or why not."""
    run_dir = Path(export_dir).resolve().parent
    model, metadata = run_dir / "model.keras", run_dir / "metadata.json"
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
        return None, None, "TensorFlow/Keras not installed: no Keras float reference row"
    if not model.is_file():
        return None, None, f"no Keras reference: {model} not found"
    try:
        preprocessing = json.loads(metadata.read_text())["preprocessing"]
    except (OSError, ValueError, KeyError) as exc:
        return None, None, f"no Keras reference: cannot read its preprocessing from {metadata} ({exc})"
    accuracy = reference_accuracy(report) if report else {}
    return Artifact(KERAS_NAME, model, "keras", False, accuracy=accuracy), preprocessing, None
