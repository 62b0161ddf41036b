"""How well edge-adapt learns a new line from n labelled images per class: accuracy against n, spread over draws.

    python -m benchmarks.fewshot --data ../shared/datasets/xsdd --shots 1 2 5 10 20 --draws 10 \\
        --figure docs/figures/adapt_xsdd.png

Every image under ``--data`` (one folder per class) goes through the model once per view (as captured and
mirrored, ``--views``); then, for each draw, n images per class are enrolled exactly as ``edge-adapt --only-new``
does (:func:`edge_runtime.adapt.build_head` on the same outputs, every view) and every *other* image, as
captured, is answered by :meth:`AdaptedHead.decide`, as the adapted model would answer it; ``unknown`` counts as
wrong. The unknown answer's honesty is measured by leaving one class out of the enrolment: its images should be
``unknown`` (AUROC of the adapted score, share caught at the threshold).

``--unlabelled-share S``: for each draw a share S of the other images is given to the enrolment unlabelled
(``edge-adapt --unlabelled``; a left-out class's images among them) and only the rest is answered, once by the
model adapted with them and once without (same images, same draws). ``--transductive``: every other image is
given unlabelled and then answered (a box that learnt from the frames it answers).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from edge_runtime.adapt import (DEFAULT_QUANTILE, DEFAULT_VIEWS, MIRRORS, Unlabelled, build_head,
                                mirrored_views, transform)
from edge_runtime.adapt_cli import _class_folders, feature_output
from edge_runtime.classifier import Classifier
from edge_runtime.cli_support import setup_logging
from edge_runtime.ood import auroc
from edge_runtime.preprocessing import read_image

log = logging.getLogger("fewshot")


def outputs_of(classifier: Classifier, files: list[Path], feature: str, views: int = DEFAULT_VIEWS,
               batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(raw features (V, N, D), rows of the base unknown score (V, N, E): ``OodSpec.embed``) of every file in each
    of ``views`` views, in order."""
    features, embeddings = [], []
    for start in range(0, len(files), batch):
        prepared = [classifier.prepare(read_image(f)) for f in files[start:start + batch]]
        per_view = [[pixels for _, pixels in mirrored_views(p, views)] for p in prepared]
        outputs = classifier.device_outputs(np.stack([v[i] for i in range(views) for v in per_view]))
        features.append(outputs[feature].reshape(views, len(prepared), -1))
        base = classifier.ood.embed(outputs[classifier.ood.feature])  # as the adapted head's gate holds them
        embeddings.append(base.reshape(views, len(prepared), -1))
    return np.concatenate(features, axis=1), np.concatenate(embeddings, axis=1)


def evaluate(features: np.ndarray, embeddings: np.ndarray, labels: np.ndarray, classes: list[str], shots: int,
             draws: int, quantile: float, feature: str, unlabelled_share: float = 0.0,
             transductive: bool = False) -> dict[str, float]:
    """Mean and spread over draws of accuracy, unknown rate, and the held-out-class figures.

    ``features`` (V, N, D) and ``embeddings`` (V, N, E): every image in V views, the first as captured; enrolled
    images bring every view, the others are answered as captured. With ``unlabelled_share`` that share of the
    others is enrolled unlabelled and the rest answered; ``accuracy_labelled_only`` is the same images answered
    without them. ``transductive``: every other image is enrolled unlabelled and answered."""
    rows = transform(features)
    views = len(features)
    figures: dict[str, list[float]] = {k: [] for k in ("accuracy", "unknown", "held_out_auroc", "held_out_caught",
                                                       "accuracy_labelled_only")}
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        enrolled = np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False)
                                   for c in range(len(classes))])
        others = np.setdiff1d(np.arange(len(labels)), enrolled)
        pool = others if transductive else np.array([], int)
        if unlabelled_share > 0 and not transductive:
            others = rng.permutation(others)
            cut = int(round(len(others) * unlabelled_share))
            pool, others = np.sort(others[:cut]), np.sort(others[cut:])

        def head_of(index: np.ndarray, with_pool: bool = True):
            names = [classes[labels[i]] for i in index] * views
            images = [str(i) for i in index] * views
            unlabelled = (Unlabelled(rows[0, pool], embeddings[0, pool], [{"sha256": str(i)} for i in pool])
                          if with_pool and len(pool) else None)
            return build_head(rows[:, index].reshape(-1, rows.shape[-1]),
                              embeddings[:, index].reshape(-1, embeddings.shape[-1]), names,
                              [{"sha256": i, "class": n} for i, n in zip(images, names)], [], False, feature,
                              quantile, unlabelled=unlabelled)

        def answers(head):
            return head.decide(np.zeros((len(others), 0)), features[0, others], embeddings[0, others], None)

        def right(head) -> float:
            probabilities, scores = answers(head)
            truth = np.array([head.labels.index(classes[labels[i]]) for i in others])
            return float(np.mean((probabilities.argmax(1) == truth) & (scores <= 0)))

        head = head_of(enrolled)
        figures["accuracy"].append(right(head))
        figures["unknown"].append(float(np.mean(answers(head)[1] > 0)))
        if len(pool):
            figures["accuracy_labelled_only"].append(right(head_of(enrolled, with_pool=False)))
        for held in range(len(classes)):
            kept = enrolled[labels[enrolled] != held]
            _, scores = answers(head_of(kept))
            new = labels[others] == held
            figures["held_out_auroc"].append(auroc(scores[~new], scores[new]))
            figures["held_out_caught"].append(float(np.mean(scores[new] > 0)))
    result = {"shots": shots, "accuracy_std": float(np.std(figures["accuracy"]))}
    result.update({k: float(np.nanmean(v)) for k, v in figures.items() if v})
    return result


def draw_figure(results: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = [r["shots"] for r in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(shots, [100 * r["accuracy"] for r in results], yerr=[100 * r["accuracy_std"] for r in results],
                marker="o", capsize=4, label="right (unknown counts as wrong)")
    if all("accuracy_labelled_only" in r for r in results):
        ax.plot(shots, [100 * r["accuracy_labelled_only"] for r in results], marker="o", linestyle="--",
                label="right, the same images without the unlabelled ones")
    ax.plot(shots, [100 * r["unknown"] for r in results], marker="s", label="answered unknown")
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("% of the other images")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    ax.set_title(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fewshot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="one folder of images per class")
    parser.add_argument("--model", default=None, help="base model (default: the shipped one)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 5, 10, 20])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE)
    parser.add_argument("--views", type=int, choices=range(1, len(MIRRORS) + 1), default=DEFAULT_VIEWS,
                        help="views enrolled per image, as edge-adapt --views")
    parser.add_argument("--unlabelled-share", type=float, default=0.0, help="share of the other images enrolled "
                        "unlabelled, as edge-adapt --unlabelled (the rest is answered)")
    parser.add_argument("--transductive", action="store_true", help="every other image is given unlabelled and "
                        "answered (instead of --unlabelled-share)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="PNG of accuracy against labelled images")
    args = parser.parse_args(argv)
    setup_logging()
    classifier = Classifier.load(args.model, threads=args.threads)
    feature = feature_output(classifier)
    folders = _class_folders(Path(args.data))
    classes = list(folders)
    files = [f for name in classes for f in folders[name]]
    labels = np.array([classes.index(f.parent.name) for f in files])
    log.info("%d images of %d classes through %s (head on '%s')", len(files), len(classes), classifier.path, feature)
    features, embeddings = outputs_of(classifier, files, feature, args.views)
    if not 0.0 <= args.unlabelled_share < 1.0:
        parser.error(f"--unlabelled-share must be in [0, 1), got {args.unlabelled_share}")
    results = [evaluate(features, embeddings, labels, classes, n, args.draws, args.quantile, feature,
                        args.unlabelled_share, args.transductive) for n in args.shots]
    pooled = args.unlabelled_share > 0 or args.transductive
    print("| labelled per class | right (mean ± std over draws) |" + (" right without the unlabelled |" if pooled
                                                                      else "") +
          " unknown | held-out class AUROC | held-out caught |")
    print("|---:|---:|" + ("---:|" if pooled else "") + "---:|---:|---:|")
    for r in results:
        print(f"| {r['shots']} | {100 * r['accuracy']:.1f} ± {100 * r['accuracy_std']:.1f} % | "
              + (f"{100 * r['accuracy_labelled_only']:.1f} % | " if pooled else "")
              + f"{100 * r['unknown']:.1f} % | {r['held_out_auroc']:.3f} | {100 * r['held_out_caught']:.1f} % |")
    if args.figure:
        draw_figure(results, args.figure, f"{Path(args.data).name}: {classifier.path.name}, head on '{feature}', "
                                          f"{args.draws} draws, {args.views} views"
                                          + (", transductive" if args.transductive else
                                             f", {args.unlabelled_share:.0%} unlabelled" if pooled else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
