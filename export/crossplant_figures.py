"""Cross-plant figures of an export, for the float reference: what each source class is called, how the
unknown score separates NEU from other plants, and the GC10 annotated crops with their answers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from export.checks import EvalData, called_as

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def called_as_figure(data: EvalData, labels: list[str], probabilities: np.ndarray, flagged: np.ndarray,
                     path: Path) -> Path | None:
    """Stacked bars per source class of every cross-plant set: the share of each answer, closed set (top class
    only) on the left, with the unknown answer on the right."""
    panels = [("top class only (closed set)", called_as(data.items, labels, probabilities)),
              ("with the unknown answer", called_as(data.items, labels, probabilities, flagged))]
    keys = [(group, name) for group, classes in panels[1][1].items() if group != "neu" for name in classes]
    if not keys:
        return None
    plt = _plt()
    answers = ["unknown", *labels]
    colours = ["#444444", *plt.get_cmap("tab10").colors[: len(labels)]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.32 * len(keys) + 1.8), sharey=True)
    for ax, (title, table) in zip(axes, panels):
        rows = [table[group][name] for group, name in keys]
        left = np.zeros(len(rows))
        for answer, colour in zip(answers, colours):
            shares = np.array([row.get(answer, 0) / sum(row.values()) for row in rows])
            ax.barh(range(len(rows)), shares, left=left, color=colour, label=answer)
            left += shares
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of images")
        ax.set_title(title, fontsize=10)
    axes[0].set_yticks(range(len(keys)), [f"{g}: {n} (n={sum(panels[1][1][g][n].values())})" for g, n in keys],
                       fontsize=8)
    axes[0].invert_yaxis()
    axes[1].legend(ncol=1, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("What the NEU-trained float model answers on other plants", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def unknown_score_figure(data: EvalData, scores: np.ndarray, threshold: float, path: Path) -> Path | None:
    """Histograms of the unknown score: NEU validation/test against each cross-plant group."""
    groups: dict[str, list[float]] = {}
    for item, score in zip(data.items, scores):
        key = f"NEU {item.split}" if item.group == "neu" else item.group
        groups.setdefault(key, []).append(float(score))
    if not groups:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    bins = np.linspace(0, max(float(np.max(scores)), threshold) * 1.05, 50)
    for name, values in groups.items():
        ax.hist(values, bins=bins, histtype="step", density=True, linewidth=1.5, label=f"{name} (n={len(values)})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f} (NEU val)")
    ax.set_xlabel("unknown score: 1 - cosine similarity to the 5th nearest training embedding")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def crops_figure(data: EvalData, labels: list[str], probabilities: np.ndarray, flagged: np.ndarray,
                 path: Path, group: str = "gc10_crops", limit: int = 24) -> Path | None:
    """A grid of the GC10 annotated crops with box label and answer (red: unknown, green: NEU name)."""
    index = [k for k, item in enumerate(data.items) if item.group == group][:limit]
    if not index:
        return None
    plt = _plt()
    cols = min(6, len(index))
    rows = int(np.ceil(len(index) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), index):
        item = data.items[k]
        answer = "unknown" if flagged[k] else f"{labels[int(probabilities[k].argmax())]} {probabilities[k].max():.2f}"
        ax.imshow(data.pixels[k][..., ::-1])
        ax.set_title(f"{item.source_class}\n→ {answer}", fontsize=8, color="firebrick" if flagged[k] else "darkgreen")
    fig.suptitle("GC10-DET annotated crops (label from the VOC box) and the float model's answer", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_crossplant_figures(out: Path, data: EvalData, labels: list[str], probabilities: np.ndarray,
                             scores: np.ndarray, threshold: float) -> list[Path]:
    """Every figure above into ``out``; returns the files written."""
    flagged = ~(scores <= threshold)
    written = [
        called_as_figure(data, labels, probabilities, flagged, out / "crossplant_called_as.png"),
        unknown_score_figure(data, scores, threshold, out / "unknown_scores.png"),
        crops_figure(data, labels, probabilities, flagged, out / "gc10_crops.png"),
    ]
    return [p for p in written if p is not None]
