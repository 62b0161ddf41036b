"""What ships inside the package: the default model and ``models/manifest.json``, the other shipped artifacts.

The manifest lists every shipped model file with its sha256 and its accuracy-gate status per engine ("pass",
"fail", or "waived": shipped with a documented waiver). Only "pass" and "waived" pairs may run: accuracy is
never traded for speed silently. Without a manifest the only shipped model is the default one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.backends import engines_for
from edge_runtime.errors import ManifestError, ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.tflite"
MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "steel-edge-inspect/shipped-models/1"
GATE_STATUSES = ("pass", "fail", "waived")
ELIGIBLE = ("pass", "waived")


def default_model_path() -> Path:
    """The model that ships inside the package (may be absent from a source install)."""
    return DEFAULT_MODEL


def shipped_default(default_model: Path | None = None) -> Path:
    """The default model (``default_model_path()`` unless given), checked to exist: ModelLoadError if not."""
    path = Path(default_model) if default_model is not None else default_model_path()
    if not path.is_file():
        raise ModelLoadError(path, "no default model ships in this install; pass a model file "
                             "(--model PATH / Classifier.load(path))")
    return path


@dataclass(frozen=True)
class ShippedArtifact:
    """One model file of the manifest and its accuracy-gate status per engine ("pass", "fail", "waived")."""

    file: str
    format: str
    sha256: str
    gates: dict[str, str]

    def gate(self, engine: str) -> str | None:
        return self.gates.get(engine)


@dataclass(frozen=True)
class Manifest:
    path: Path
    default: str
    artifacts: list[ShippedArtifact]

    @property
    def directory(self) -> Path:
        return self.path.parent

    def ordered(self) -> list[ShippedArtifact]:
        """The artifacts, the default one first."""
        return sorted(self.artifacts, key=lambda a: a.file != self.default)


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate a shipped-models manifest; any problem raises :class:`ManifestError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(path, f"cannot read it ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        raise ManifestError(path, f"not a {MANIFEST_SCHEMA!r} manifest")
    entries = data.get("artifacts")
    if not isinstance(entries, list) or not entries:
        raise ManifestError(path, "'artifacts' must be a non-empty list")
    artifacts = [_manifest_artifact(path, entry) for entry in entries]
    default = data.get("default")
    if default not in {a.file for a in artifacts}:
        raise ManifestError(path, f"'default' {default!r} is not one of the listed artifacts")
    return Manifest(path, default, artifacts)


def _manifest_artifact(path: Path, entry: Any) -> ShippedArtifact:
    if not isinstance(entry, dict):
        raise ManifestError(path, f"an artifact entry is not an object: {entry!r}")
    file, sha256, gates = entry.get("file"), entry.get("sha256"), entry.get("gates")
    if not isinstance(file, str) or not file or Path(file).name != file:
        raise ManifestError(path, f"'file' must be a plain file name, got {file!r}")
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ManifestError(path, f"{file}: 'sha256' must be 64 hex digits, got {sha256!r}")
    if not isinstance(gates, dict) or any(status not in GATE_STATUSES for status in gates.values()):
        raise ManifestError(path, f"{file}: 'gates' must map engines to one of {list(GATE_STATUSES)}, got {gates!r}")
    return ShippedArtifact(file, str(entry.get("format", "unknown")), sha256.lower(), dict(gates))


def load_manifest(models_dir: Path) -> Manifest | None:
    """The manifest of ``models_dir``; None when there is none or it is invalid (logged as a warning)."""
    path = Path(models_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return read_manifest(path)
    except ManifestError as exc:
        log.warning("%s; using the default model with its default engine", exc)
        return None


def shipped_model_for(engine: str, models_dir: Path | None = None, default_model: Path | None = None) -> Path:
    """The shipped model an explicitly named engine runs: the first (default first) gated "pass"/"waived" for it.

    ``models_dir`` and ``default_model`` default to the package's. Without a manifest: the default model (the
    engine must be able to run it).
    """
    default_model = Path(default_model) if default_model is not None else default_model_path()
    manifest = load_manifest(Path(models_dir) if models_dir is not None else default_model.parent)
    if manifest is None:
        return shipped_default(default_model)
    for artifact in manifest.ordered():
        path = manifest.directory / artifact.file
        try:
            runs = engine in engines_for(path)
        except ModelLoadError as exc:
            log.warning("shipped-models manifest: %s", exc)
            continue
        if runs and artifact.gate(engine) in ELIGIBLE:
            return path
    raise ModelLoadError(manifest.path, f"no shipped model passed its accuracy gates on the {engine} engine; "
                         "use --engine auto, another engine, or pass a model file (--model PATH)")
