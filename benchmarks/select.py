"""``edge-bench --select``: the measurement behind ``--engine auto``, shown in full and never cached.

Every (artifact, engine) pair that can run here is timed the way ``edge_runtime.engine_select`` times its
candidates (same fixed input, warm-up and timed runs, a total time budget); pairs that may be chosen (gate
status "pass" or "waived" for that engine) are measured first, the others after them so that their speed is on
record too. The "chosen" mark is what ``--engine auto`` would pick on this machine from the same pairs.

Pairs come from the shipped models (``edge_runtime/models/manifest.json``) or from EXPORT_DIR: its
``manifest.json`` if it has one, else its artifacts (export_report.json), gated "pass"/"fail" on each engine
edge-export checked them with and "not gated" on any other.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.artifacts import discover
from edge_runtime.backends import default_threads, engines_for
from edge_runtime.engine_candidates import Candidate, engine_unavailable, manifest_pairs, shipped_candidates
from edge_runtime.engine_select import DEFAULT_BUDGET_S, Measurement, describe_machine, fastest, measure_candidates
from edge_runtime.shipped import ELIGIBLE, MANIFEST_NAME, default_model_path, load_manifest, read_manifest

log = logging.getLogger(__name__)

SELECT_JSON = "select.json"
SECONDS_PER_PAIR = 4.0


def shipped_pairs(models_dir: Path | None = None) -> list[tuple[Candidate, str | None]]:
    """The shipped models' pairs with why each may not be chosen (None: it may); see engine_candidates."""
    models_dir = Path(models_dir) if models_dir is not None else default_model_path().parent
    manifest = load_manifest(models_dir)
    if manifest is None:
        return [(c, None) for c in shipped_candidates(models_dir, default_model_path())]
    return manifest_pairs(manifest)


def export_dir_pairs(export_dir: Path, formats: list[str] | None = None) -> list[tuple[Candidate, str | None]]:
    """EXPORT_DIR's pairs: from its manifest.json, else from its export report's verdict per file and engine."""
    export_dir = Path(export_dir)
    if (export_dir / MANIFEST_NAME).is_file():
        return manifest_pairs(read_manifest(export_dir / MANIFEST_NAME))
    artifacts, _ = discover(export_dir, formats)
    files: dict[Path, str] = {}  # file -> format name, in the format table's order
    verdicts: dict[tuple[Path, str], bool] = {}  # (file, engine) -> passed, for the pairs edge-export checked
    for artifact in artifacts:
        if artifact.path is None:
            log.warning("%s: %s", artifact.name, artifact.error)
            continue
        files.setdefault(artifact.path, artifact.name.split("@")[0])
        if artifact.accuracy.get("passed") is not None:
            verdicts[(artifact.path, artifact.engine)] = bool(artifact.accuracy["passed"])
    pairs = []
    for path, fmt in files.items():
        for engine in engines_for(path):
            passed = verdicts.get((path, engine))
            gate = "not gated" if passed is None else ("pass" if passed else "fail")
            reason = None if gate in ELIGIBLE else f"gate status {gate} for this engine"
            pairs.append((Candidate(engine, path, "", fmt, gate), reason or engine_unavailable(engine)))
    return pairs


def run_select(export_dir: str | Path | None = None, *, threads: int | None = None, budget_s: float | None = None,
               formats: list[str] | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Measure every runnable pair (eligible ones first) and return the comparison; ``out``: also select.json."""
    threads = default_threads() if threads is None else int(threads)
    pairs = export_dir_pairs(Path(export_dir), formats) if export_dir is not None else shipped_pairs()
    runnable = [(c, r) for c, r in pairs if c.path.is_file() and engine_unavailable(c.engine) is None]
    runnable.sort(key=lambda pair: pair[1] is not None)  # candidates first: the budget serves them
    eligible = {c for c, r in runnable if r is None}
    budget_s = budget_s if budget_s is not None else max(DEFAULT_BUDGET_S, SECONDS_PER_PAIR * len(runnable))
    start = time.perf_counter()
    measurements, _ = measure_candidates([c for c, _ in runnable], threads, budget_s,
                                         keep=lambda c: False)  # nothing is kept loaded
    best = fastest(measurements, keep=lambda c: c in eligible)
    rows = [_row(m, eligible, best) for m in measurements]
    measured = {c for c, _ in runnable}
    rows += [_unmeasured_row(c, reason) for c, reason in pairs if c not in measured]
    result = {
        "machine": describe_machine(), "threads": threads, "budget_s": budget_s,
        "seconds": round(time.perf_counter() - start, 2), "source": str(export_dir or "shipped models"),
        "chosen": {"engine": best.candidate.engine, "file": best.candidate.path.name} if best else None,
        "rows": rows,
    }
    if out is not None:
        path = Path(out) / SELECT_JSON
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        result["outputs"] = {"json": str(path)}
    return result


def _row(measurement: Measurement, eligible: set[Candidate], best: Measurement | None) -> dict[str, Any]:
    row = measurement.to_dict()
    row["eligible"] = measurement.candidate in eligible
    row["chosen"] = best is not None and measurement is best
    return row


def _unmeasured_row(candidate: Candidate, reason: str | None) -> dict[str, Any]:
    row = Measurement(candidate, error=f"not run: {reason or 'file missing'}").to_dict()
    return {**row, "eligible": False, "chosen": False}


def select_text(result: dict[str, Any]) -> str:
    """The machine, then the comparison table in markdown."""
    machine = result["machine"]
    engines = ", ".join(f"{name} {version or 'not installed'}" for name, version in machine["engines"].items())
    chosen = result["chosen"]
    generation = f"{machine['generation']}, " if machine.get("generation") else ""
    lines = [
        f"CPU: {machine['cpu']} ({machine['machine']}, {generation}{machine['cores']} cores); "
        f"ISA flags: {', '.join(machine['isa']) or 'none read'}",
        f"Engines: {engines}; {result['threads']} thread(s); budget {result['budget_s']:.0f} s, "
        f"took {result['seconds']:.1f} s; source: {result['source']}",
        f"--engine auto would use: {chosen['engine']} {chosen['file']}" if chosen
        else "--engine auto would find no eligible pair that runs here",
        "",
        "| engine | artifact | format | gate | median ms | p90 ms | runs | load s | chosen | note |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in result["rows"]:
        lines.append("| " + " | ".join([
            row["engine"], row["file"], row["format"], row["gate"] + ("" if row["eligible"] else " (not eligible)"),
            _ms(row["median_ms"]), _ms(row["p90_ms"]), str(row["runs"]),
            "–" if row["load_s"] is None else f"{row['load_s']:.2f}", "**chosen**" if row["chosen"] else "",
            (row["error"] or "").replace("|", "\\|"),
        ]) + " |")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
