"""The run directory's figures: training curves, confusion matrices and a prediction grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(history: list[dict], path: Path) -> None:
    """Accuracy and loss per epoch over both stages, with the stage boundary marked."""
    if not history:
        return
    steps = np.arange(1, len(history) + 1)
    stages = [int(r["stage"]) for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [float(r[prefix + metric]) if r.get(prefix + metric) else np.nan for r in history]
            ax.plot(steps, values, style, marker="o", ms=3, label=("validation " if prefix else "train ") + metric)
        if 2 in stages and 1 in stages:
            boundary = stages.index(2) + 0.5
            ax.axvline(boundary, color="grey", lw=1)
            axis = ax.get_xaxis_transform()  # x in data units, y in axes fraction
            ax.text(boundary, 1.01, " stage 2: fine-tune →", fontsize=8, color="grey", transform=axis)
            ax.text(boundary, 1.01, "← stage 1: head ", fontsize=8, color="grey", ha="right", transform=axis)
        ax.set_xlabel("epoch (both stages)")
        ax.set_title(metric, pad=14)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    correct = int(np.trace(matrix))
    total = int(matrix.sum())
    ax.set_title(f"{title}: {correct}/{total} = {100 * correct / max(total, 1):.1f} %")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def prediction_grid(
    images: list[np.ndarray], captions: list[str], correct: list[bool], title: str, path: Path, columns: int = 4
) -> None:
    """Thumbnails with predicted label and confidence; green frame = expected class, red = not."""
    count = max(len(images), 1)
    rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.2 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption, ok in zip(axes.flat, images, captions, correct):
        ax.imshow(image[..., ::-1] if image.ndim == 3 else image, cmap="gray")
        ax.set_title(caption, fontsize=8, color="green" if ok else "red")
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color("green" if ok else "red")
            spine.set_linewidth(3)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    if not images:
        axes.flat[0].text(0.5, 0.5, "no images", ha="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
