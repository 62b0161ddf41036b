"""Which (engine, model file) pairs ``--engine auto`` may choose from.

* An explicit model file: the installed engines its export gates passed on, as edge-export records them in the
  file's metadata (``extra["validation"]["engines"]``: ``{engine: {"passed": bool, "failures": [...]}}``).
  Engines listed as failed, or not listed (the file was not checked on them), are left out (logged at INFO).
  When no installed engine passed, the only candidate is the file's default engine, with a warning: a file
  the user chose still runs. A file without ``validation.engines`` (older exports, or files from elsewhere)
  keeps every installed engine that can run it (:func:`edge_runtime.backends.engines_for`). The metadata is
  read without loading the model (the appended zip of a .tflite, the ``metadata_props`` of an .onnx).
* The shipped models (:mod:`edge_runtime.shipped`): every artifact of ``models/manifest.json`` whose gate
  status for an installed engine that can run it is "pass" or "waived". "fail" and pairs the manifest does not
  list are never candidates. Without a manifest the only candidate is the default model with its suffix's engine.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.backends import ENGINES, check_model_file, engine_for, engines_for
from edge_runtime.errors import EdgeRuntimeError, ModelLoadError
from edge_runtime.metadata import read_metadata
from edge_runtime.shipped import ELIGIBLE, Manifest, load_manifest, shipped_default

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A model file and an engine to run it.

    ``gate``: its gate status from the manifest, or from an explicit file's embedded metadata ("pass", or for
    the default-engine fallback "fail"/"not gated"), or "user file" when the file records no per-engine gates.
    """

    engine: str
    path: Path
    sha256: str = ""  # "" until needed (an explicit file is hashed only when there is a choice to cache)
    format: str = "unknown"
    gate: str = "user file"

    @property
    def label(self) -> str:
        return f"{self.engine} {self.path.name}"


def engine_unavailable(engine: str) -> str | None:
    """Why ``engine`` cannot run here (unknown, or its package is not installed), or None when it can."""
    backend_class = ENGINES.get(engine)
    if backend_class is None:
        return f"unknown engine {engine!r}"
    top = backend_class.module.split(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"the '{backend_class.package}' package is not installed"


def file_candidates(path: str | Path) -> list[Candidate]:
    """The installed engines that may run the model file, its suffix's default first.

    With per-engine gate results in the file's metadata (:func:`embedded_engine_gates`): the installed engines
    that passed, else the default engine alone (with a warning). Without them: every installed engine that can
    run the file. Empty when no engine that may run it is installed.
    """
    path = check_model_file(path)
    gates = embedded_engine_gates(path)
    candidates = []
    for engine in engines_for(path):
        reason = engine_unavailable(engine)
        if reason:
            log.debug("engine auto: %s is not a candidate for %s (%s)", engine, path.name, reason)
        elif gates is None:
            candidates.append(Candidate(engine, path))
        elif engine not in gates:
            log.info("engine auto: %s is not a candidate for %s: its export checks did not run it on %s",
                     engine, path.name, engine)
        elif not gates[engine]["passed"]:
            failures = ", ".join(map(str, gates[engine]["failures"])) or "no reason recorded"
            log.info("engine auto: %s is not a candidate for %s: it failed its export gates on %s (%s)",
                     engine, path.name, engine, failures)
        else:
            candidates.append(Candidate(engine, path, gate="pass"))
    if gates is None or candidates:
        return candidates
    default = engine_for(path)
    status = "not gated" if default not in gates else "pass" if gates[default]["passed"] else "fail"
    log.warning("engine auto: %s passed its export gates on no installed engine (gated: %s); running it on its "
                "default engine %s (gate status %s for it) without measuring", path.name,
                ", ".join(f"{e} {'pass' if g['passed'] else 'fail'}" for e, g in gates.items()) or "none",
                default, status)
    return [] if engine_unavailable(default) else [Candidate(default, path, gate=status)]


def embedded_engine_gates(path: Path) -> dict[str, dict[str, Any]] | None:
    """The per-engine gate results edge-export embedded in the model file (``extra.validation.engines``).

    ``{engine: {"passed": bool, "failures": [str]}}``; an entry whose "passed" is not ``true`` counts as failed.
    None when the file has no readable metadata or it has no ``validation.engines`` (then every engine may
    run it, as before gating was recorded). Reads the metadata without loading the model.
    """
    try:
        meta = read_metadata(path)
    except (EdgeRuntimeError, OSError, ValueError) as exc:
        log.debug("engine auto: no metadata read from %s (%s); every installed engine is a candidate", path, exc)
        return None
    validation = meta.extra.get("validation")
    engines = validation.get("engines") if isinstance(validation, dict) else None
    if not isinstance(engines, dict):
        return None
    gates = {}
    for engine, result in engines.items():
        result = result if isinstance(result, dict) else {}
        failures = result.get("failures")
        gates[str(engine)] = {"passed": result.get("passed") is True,
                              "failures": list(failures) if isinstance(failures, list) else []}
    return gates


def manifest_pairs(manifest: Manifest) -> list[tuple[Candidate, str | None]]:
    """Every (artifact, engine that can run it) pair of the manifest, with why it is not a candidate (or None)."""
    pairs = []
    for artifact in manifest.ordered():
        path = manifest.directory / artifact.file
        try:
            engines = engines_for(path)
        except ModelLoadError as exc:
            log.warning("shipped-models manifest: %s", exc)
            continue
        for engine in engines:
            status = artifact.gate(engine)
            candidate = Candidate(engine, path, artifact.sha256, artifact.format, status or "not gated")
            pairs.append((candidate, _not_a_candidate(candidate, status)))
    return pairs


def _not_a_candidate(candidate: Candidate, status: str | None) -> str | None:
    if status not in ELIGIBLE:
        return f"gate status {status or 'not gated'} for this engine"
    if not candidate.path.is_file():
        return "the file is missing from the install"
    return engine_unavailable(candidate.engine)


def shipped_candidates(models_dir: Path, default_model: Path) -> list[Candidate]:
    """The shipped (artifact, engine) pairs that may run: gate "pass"/"waived", engine installed, file present.

    Without a (valid) manifest: the default model with its suffix's engine. Raises ModelLoadError when
    there is nothing to run, saying what to install or pass.
    """
    manifest = load_manifest(models_dir)
    if manifest is None:
        default_model = shipped_default(default_model)
        return [Candidate(engine_for(default_model), default_model, gate="no manifest")]
    candidates, refused = [], []
    for candidate, reason in manifest_pairs(manifest):
        if reason is None:
            candidates.append(candidate)
        else:
            refused.append(f"{candidate.label}: {reason}")
            log.debug("engine auto: %s is not a candidate (%s)", candidate.label, reason)
    if not candidates:
        raise ModelLoadError(manifest.path, "no shipped model can run here (" + "; ".join(refused) + "); install "
                             'the engine it needs (pip install "steel-edge-inspect[edge]") or pass a model file '
                             "(--model PATH)")
    return candidates
