"""``--engine auto``: measure the candidate (engine, model file) pairs on this machine and use the fastest.

The candidates come from :mod:`edge_runtime.engine_candidates`. Each is loaded and warmed up on a fixed seeded
input, then they are timed in turns, in alternating order (10 timed calls each; the median counts), all
within a total time budget; the lowest median wins (ties: the earlier candidate, the default first). The
choice is cached per machine in ``engine-choice.json`` under the user cache dir (``$EDGE_RUNTIME_CACHE_DIR``,
else ``$XDG_CACHE_HOME/steel-edge-inspect``, else ``~/.cache/steel-edge-inspect``), keyed by CPU model and ISA
flags, thread count, the engine packages' versions and the candidate set (file names and sha256). A hit loads
the chosen pair without measuring; delete the file to measure again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import ENGINES, Backend, default_threads, engine_for, load_backend
from edge_runtime.engine_candidates import Candidate, file_candidates, shipped_candidates
from edge_runtime.errors import EdgeRuntimeError, ModelLoadError
from edge_runtime.fileio import file_sha256, write_json_atomic
from edge_runtime.system import cpu_info

log = logging.getLogger(__name__)

AUTO = "auto"
CACHE_ENV = "EDGE_RUNTIME_CACHE_DIR"
CACHE_FILE = "engine-choice.json"
CACHE_SCHEMA = "steel-edge-inspect/engine-choice/1"
MAX_CACHE_ENTRIES = 16
DEFAULT_BUDGET_S = 12.0
WARMUP_RUNS = 2
TIMED_RUNS = 10
CALLS_PER_TURN = 5  # timed calls per candidate and round (see _timed_rounds)
SETTLE_CALLS = 2  # untimed calls before them: the first calls after another engine's are slower
PROBE_SEED = 0
NOT_MEASURED = "not measured: the time budget ran out"


# --- measuring -----------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One candidate's timing: median/p90 of the timed runs in ms, or why it was not measured."""

    candidate: Candidate
    median_ms: float | None = None
    p90_ms: float | None = None
    runs: int = 0
    load_s: float | None = None
    error: str | None = None
    exception: Exception | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.candidate.engine, "file": self.candidate.path.name, "format": self.candidate.format,
                "gate": self.candidate.gate, "median_ms": self.median_ms, "p90_ms": self.p90_ms, "runs": self.runs,
                "load_s": self.load_s, "error": self.error}


def probe_input(backend: Backend) -> np.ndarray:
    """A fixed batch of one image of seeded random pixels, in the dtype the model takes."""
    height, width = backend.input_shape[1:3]
    if height < 1 or width < 1:
        raise ValueError(f"the model input {list(backend.input_shape)} has no fixed size to measure with")
    pixels = np.random.default_rng(PROBE_SEED).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    if backend.input_dtype == np.uint8:
        return pixels
    if backend.input_dtype == np.int8:
        return (pixels.astype(np.int16) - 128).astype(np.int8)
    return pixels.astype(np.float32) - 128.0  # roughly the range of mean-subtracted pixels


def measure_candidates(candidates: Sequence[Candidate], threads: int, budget_s: float = DEFAULT_BUDGET_S,
                       warmup: int = WARMUP_RUNS, repeats: int = TIMED_RUNS,
                       keep: Callable[[Candidate], bool] = lambda c: True) -> tuple[list[Measurement], Backend | None]:
    """Load every candidate, then time them round-robin, within ``budget_s`` seconds in all (loading included).

    Candidates are loaded and warmed up (``warmup`` untimed calls) in order until half the budget is spent; the
    first always is, later ones are then not measured. The loaded candidates are then timed in turns
    (:func:`_timed_rounds`, ``repeats`` timed calls each), so that other work on the machine (a second
    process, a busy hour) weighs on every candidate alike instead of on whichever ran at that moment. All
    loaded candidates are held in memory until the rounds end. Returns the measurements (in candidate order)
    and the fastest candidate among those ``keep`` accepts, still loaded (None if none was measured).
    """
    start = time.perf_counter()
    deadline, loading_deadline = start + budget_s, start + budget_s / 2
    measurements: list[Measurement] = []
    loaded: list[tuple[Measurement, Backend, np.ndarray, list[float]]] = []
    for i, candidate in enumerate(candidates):
        if i > 0 and time.perf_counter() >= loading_deadline:
            measurements.append(Measurement(candidate, error=NOT_MEASURED))
            continue
        measurement, backend, batch = _load_and_warm_up(candidate, threads, warmup)
        measurements.append(measurement)
        if backend is not None:
            loaded.append((measurement, backend, batch, []))
    _timed_rounds(loaded, deadline, repeats)
    best: tuple[float, Backend] | None = None
    for measurement, backend, _, samples in loaded:
        measurement.median_ms = float(np.median(samples))
        measurement.p90_ms = float(np.percentile(samples, 90))
        measurement.runs = len(samples)
        log.debug("engine auto: %s: %s", measurement.candidate.label, _describe(measurement))
        if keep(measurement.candidate) and (best is None or measurement.median_ms < best[0]):
            best = (measurement.median_ms, backend)
    return measurements, best[1] if best else None


def _load_and_warm_up(candidate: Candidate, threads: int,
                      warmup: int) -> tuple[Measurement, Backend | None, np.ndarray | None]:
    start = time.perf_counter()
    try:
        backend = load_backend(candidate.path, candidate.engine, threads)
        batch = probe_input(backend)
        load_s = time.perf_counter() - start
        for _ in range(max(warmup, 1)):
            backend.run_outputs(batch)
    except (EdgeRuntimeError, ValueError, RuntimeError) as exc:
        log.warning("engine auto: cannot use %s: %s", candidate.label, exc)
        return Measurement(candidate, error=str(exc), load_s=time.perf_counter() - start, exception=exc), None, None
    return Measurement(candidate, load_s=load_s), backend, batch


def _timed_rounds(loaded: list[tuple[Measurement, Backend, np.ndarray, list[float]]], deadline: float,
                  repeats: int, clock: Callable[[], float] = time.perf_counter) -> None:
    """Rounds in which each loaded candidate makes ``SETTLE_CALLS`` untimed calls, then up to ``CALLS_PER_TURN``
    timed calls (ms, appended to its samples), until each has ``repeats``; every other round runs the candidates
    in reverse order (A B, B A, ...), so that load rising or falling during the probe weighs on each alike. No
    call starts that would end after ``deadline`` by the candidate's last call's length, except each
    candidate's first timed call.

    The untimed calls are there because the first calls after another engine's are slower (its worker threads
    still spinning, its weights in the caches): measured on the shipped models, OpenVINO took 18–20 ms and
    then 12 ms for its first two calls after ONNX Runtime's, against 6.4–7.4 ms from the third on."""
    def fits(seconds: float) -> bool:
        return clock() + seconds <= deadline

    def timed_call(backend: Backend, batch: np.ndarray) -> float:
        start = clock()
        backend.run_outputs(batch)
        return clock() - start

    for round_number in range(repeats):
        before = sum(len(samples) for *_, samples in loaded)
        for _, backend, batch, samples in (loaded if round_number % 2 == 0 else loaded[::-1]):
            if len(samples) >= repeats:
                continue
            last = samples[-1] / 1000 if samples else 0.0
            for _ in range(SETTLE_CALLS):
                if fits(last):
                    last = timed_call(backend, batch)
            for _ in range(min(CALLS_PER_TURN, repeats - len(samples))):
                if samples and not fits(last):
                    break
                last = timed_call(backend, batch)
                samples.append(last * 1000)
        if sum(len(samples) for *_, samples in loaded) == before:
            break


def fastest(measurements: Sequence[Measurement],
            keep: Callable[[Candidate], bool] = lambda c: True) -> Measurement | None:
    """The measured candidate with the lowest median (ties: the earlier one), among those ``keep`` accepts."""
    timed = [m for m in measurements if m.median_ms is not None and keep(m.candidate)]
    return min(timed, key=lambda m: m.median_ms) if timed else None


def _describe(measurement: Measurement) -> str:
    if measurement.median_ms is None:
        return measurement.error or "not measured"
    return f"{measurement.median_ms:.2f} ms (median of {measurement.runs})"


# --- the per-machine cache -----------------------------------------------------------------------------------


def engine_versions() -> dict[str, str | None]:
    """The installed version of every registered engine's package (None when not installed)."""
    versions = {}
    for name, backend_class in sorted(ENGINES.items()):
        try:
            versions[name] = importlib.metadata.version(backend_class.package)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            versions[name] = None
    return versions


def cache_path() -> Path:
    """``$EDGE_RUNTIME_CACHE_DIR/engine-choice.json``, else under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "steel-edge-inspect" / CACHE_FILE


def cache_key(candidates: Sequence[Candidate], threads: int) -> dict[str, Any]:
    """What the choice depends on: the CPU (model, generation, ISA flags), threads, engine versions, candidate
    files and their sha256."""
    cpu = cpu_info()
    digests: dict[Path, str] = {}
    pairs = []
    for c in candidates:
        if c.path not in digests:
            digests[c.path] = c.sha256 or file_sha256(c.path)
        pairs.append([c.engine, c.path.name, digests[c.path]])
    return {"cpu": cpu["model"], "generation": cpu["generation"], "machine": cpu["machine"], "isa": list(cpu["isa"]),
            "threads": int(threads),
            "engines": engine_versions(), "candidates": pairs}


def _key_id(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_cache(path: Path) -> dict[str, dict]:
    """The cache's entries by key id; a missing file gives none, a corrupt one none and a warning."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the engine-choice cache '%s' (%s); it will be rewritten", path, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) and data.get("schema") == CACHE_SCHEMA else None
    if not isinstance(entries, dict) or not all(_valid_entry(e) for e in entries.values()):
        log.warning("ignoring the engine-choice cache '%s' (not a %s file); it will be rewritten", path, CACHE_SCHEMA)
        return {}
    return entries


def _valid_entry(entry: Any) -> bool:
    choice = entry.get("choice") if isinstance(entry, dict) else None
    return isinstance(choice, dict) and isinstance(choice.get("engine"), str) and isinstance(choice.get("file"), str)


def write_cache(path: Path, entries: dict[str, dict]) -> None:
    """Write atomically, keeping the newest entries; a cache that cannot be written is only a warning."""
    newest = sorted(entries.items(), key=lambda kv: str(kv[1].get("measured_at", "")))[-MAX_CACHE_ENTRIES:]
    data = {"schema": CACHE_SCHEMA, "entries": dict(newest)}
    try:
        write_json_atomic(path, data)
    except OSError as exc:
        log.warning("cannot write the engine-choice cache '%s' (%s); the next start measures again", path,
                    exc.strerror or exc)


# --- selecting -----------------------------------------------------------------------------------------------


@dataclass
class Selection:
    """The chosen candidate, how it was chosen, and (when just measured) the chosen model already loaded."""

    chosen: Candidate
    measurements: list[Measurement] = field(default_factory=list)
    cached: bool = False
    seconds: float = 0.0
    backend: Backend | None = None


def select(candidates: Sequence[Candidate], threads: int, budget_s: float = DEFAULT_BUDGET_S,
           use_cache: bool = True, cache_file: Path | None = None) -> Selection:
    """The fastest candidate on this machine: from the cache when its key matches, else measured (and cached).

    A single candidate is chosen without measuring. If no candidate loads, the first one's error is raised.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    if len(candidates) == 1:
        log.info("engine auto: %s (the only candidate)", candidates[0].label)
        return Selection(candidates[0])
    start = time.perf_counter()
    key = cache_key(candidates, threads)
    key_id, cache_file = _key_id(key), cache_file or cache_path()
    entries = read_cache(cache_file) if use_cache else {}
    hit = _cached(entries.get(key_id), candidates)
    if hit is not None:
        log.info("engine auto: cached choice %s (measured %s; delete %s to measure again)", hit.label,
                 entries[key_id].get("measured_at", "earlier"), cache_file)
        return Selection(hit, cached=True, seconds=time.perf_counter() - start)
    measurements, backend = measure_candidates(_as_listed(candidates), threads, budget_s)
    best = fastest(measurements)
    if best is None:  # nothing loaded: the first candidate's own error (e.g. a corrupt file) says why
        raise measurements[0].exception or ModelLoadError(candidates[0].path, "no engine could run it")
    selection = Selection(best.candidate, measurements, False, time.perf_counter() - start, backend)
    log.info("engine auto: chose %s, the lowest median latency on this CPU (%s; measured in %.1f s at %d threads)",
             best.candidate.label, "; ".join(f"{m.candidate.label}: {_describe(m)}" for m in measurements),
             selection.seconds, threads)
    if use_cache:
        entries[key_id] = {"key": key, "choice": {"engine": best.candidate.engine, "file": best.candidate.path.name},
                           "measurements": [m.to_dict() for m in measurements],
                           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_cache(cache_file, entries)
    return selection


def _as_listed(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates whose file has the sha256 the manifest lists (its gate status is about that file)."""
    digests: dict[Path, str] = {}
    kept = []
    for c in candidates:
        if c.sha256 and c.path not in digests:
            digests[c.path] = file_sha256(c.path)
        if c.sha256 and digests[c.path] != c.sha256:
            log.warning("engine auto: %s is not the file the manifest lists (sha256 %s, listed %s); left out, "
                        "reinstall the package", c.path, digests[c.path][:12], c.sha256[:12])
        else:
            kept.append(c)
    if not kept:
        raise ModelLoadError(candidates[0].path, "no shipped model matches its sha256 in the manifest; "
                             "reinstall the package")
    return kept


def _cached(entry: dict | None, candidates: Sequence[Candidate]) -> Candidate | None:
    if entry is None:
        return None
    choice = entry["choice"]
    return next((c for c in candidates if c.engine == choice["engine"] and c.path.name == choice["file"]), None)


def load_auto(path: str | Path | None, threads: int | None, models_dir: Path, default_model: Path,
              budget_s: float = DEFAULT_BUDGET_S) -> Backend:
    """Load the fastest candidate: of ``path`` on the engines that may run it (see :func:`file_candidates`), or of
    the shipped models (path None)."""
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if path is not None:
        candidates = file_candidates(path)
        if not candidates:  # no engine installed for it: the default engine's error says what to install
            return load_backend(path, None, threads)
    else:
        candidates = shipped_candidates(models_dir, default_model)
    selection = select(candidates, threads, budget_s)
    default_engine = engine_for(selection.chosen.path)
    if path is not None and selection.chosen.engine != default_engine and selection.chosen.gate != "pass":
        log.info("engine auto: %s is not %s's default engine (%s), which edge-export checks accuracy with; "
                 "int8 results can differ slightly between engines: pass --engine %s to keep the default",
                 selection.chosen.engine, selection.chosen.path.name, default_engine, default_engine)
    if selection.backend is not None:
        return selection.backend
    return load_backend(selection.chosen.path, selection.chosen.engine, threads)


def describe_machine() -> dict[str, Any]:
    """CPU model, generation, ISA flags and engine versions, as the cache key and edge-bench --select report them."""
    cpu = cpu_info()
    return {"cpu": cpu["model"], "generation": cpu["generation"], "cores": cpu["cores"], "machine": cpu["machine"],
            "isa": list(cpu["isa"]), "engines": engine_versions()}
