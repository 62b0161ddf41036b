"""``edge-train``: train the defect classifier, or evaluate a trained run on another plant's images.

    edge-train --data DIR [--weights imagenet|none|PATH] [--name NAME] [--folds K] ...
    edge-train --resume RUN_DIR
    edge-train evaluate RUN_DIR --data DIR [--expect CLASS]
    edge-train soup RUN_DIR RUN_DIR [...] --name NAME
    edge-train refine RUN_DIR --name NAME [--epochs 12] [--lr 1e-4] [--anchor 10]
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from pathlib import Path

from edge_runtime.cli_support import HelpFormatter, dispatch, setup_logging
from edge_runtime.polarity import AS_IS, POLARITY_MODES
from train.refine_settings import RefineSettings

log = logging.getLogger("edge-train")


def build_fit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-train",
        description="Fine-tune ImageNet ResNet-50 on a steel-defect dataset in two stages (head, then the top "
        "of the backbone). Writes model.keras, metadata, split manifest, history, metrics and figures into "
        "RUNS/NAME. Use 'edge-train evaluate -h' to test a run on another dataset, 'edge-train soup -h' to average runs, 'edge-train refine -h' to train every layer of a run.",
        formatter_class=HelpFormatter,
    )
    src = p.add_argument_group("data and run")
    src.add_argument("--data", help="dataset root: class sub-folders, NEU's IMAGES/<class>_<n>.jpg, or Kaggle "
                     "train/+validation/ (required unless --resume)")
    src.add_argument("--weights", default="imagenet",
                     help="'imagenet' (Keras download), 'none' (random init) or a local .h5 weights file")
    src.add_argument("--runs", default="runs", help="folder that holds run directories")
    src.add_argument("--name", help="run directory name (default: neu-<date>-<time>)")
    src.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run with its saved settings")
    src.add_argument("--classes", nargs="+", help="class names in model-output order (default: sorted folder names)")
    src.add_argument("--skip-bad", action="store_true", help="skip and count unreadable images instead of stopping")
    src.add_argument("--folds", type=int, default=0, help="K-fold cross-validation with K folds (0: single split)")
    src.add_argument("--val-per-class", type=int, default=12, help="validation images per class")
    src.add_argument("--test-per-class", type=int, default=12, help="test images per class")
    src.add_argument("--seed", type=int, default=0, help="seed for initialisation and augmentation (retrain with "
                     "another to see the recipe's spread; the split stays)")
    src.add_argument("--split-seed", type=int, default=0, help="seed for which images are validation and test")
    src.add_argument("--cache-dir", help="trunk-feature cache (default: RUNS/.feature-cache)")

    rec = p.add_argument_group("recipe")
    rec.add_argument("--input-size", type=int, default=224, help="square model input size in pixels")
    rec.add_argument("--unfreeze", default="conv5", choices=("conv5", "conv4", "conv3", "conv2", "all"),
                     help="stage 2 trains the backbone from this stage on (BatchNorm stays frozen)")
    rec.add_argument("--epochs-stage1", type=int, default=30, help="max epochs, head only")
    rec.add_argument("--epochs-stage2", type=int, default=20, help="max epochs, fine-tuning")
    rec.add_argument("--lr-stage1", type=float, default=1e-3, help="Adam learning rate, stage 1")
    rec.add_argument("--lr-stage2", type=float, default=1e-4, help="Adam learning rate, stage 2")
    rec.add_argument("--batch-size", type=int, default=32)
    rec.add_argument("--patience", type=int, default=5, help="EarlyStopping patience (epochs, val accuracy)")
    rec.add_argument("--lr-patience", type=int, default=2, help="ReduceLROnPlateau patience (epochs)")
    tied = rec.add_mutually_exclusive_group()
    tied.add_argument("--loss-tie-break", action="store_true",
                      help="keep, among the epochs tied at the best validation accuracy, the one of lowest validation "
                      "loss instead of the first (NEU's validation set is all right after an epoch or two); measured "
                      "on three seeds in docs/training.md (closed-set gains on two, line jitter more often unknown on "
                      "all)")
    tied.add_argument("--average-tied-epochs", action="store_true",
                      help="keep the mean of the weights of the epochs tied at the best validation accuracy (weight "
                      "averaging) instead of one of them; measured on three seeds in docs/training.md (closed-set "
                      "gains on two, line jitter more often unknown on all)")
    rec.add_argument("--aug-copies", type=int, default=3,
                     help="cached augmented copies per training image; each epoch draws one per image")
    rec.add_argument("--consistency", type=float, default=0.0, metavar="W",
                     help="camera consistency: each step trains on two different augmented copies of every image "
                     "and adds W x the cosine distance of their embeddings to the loss (0: off). Measured in "
                     "docs/unknown.md: at 0.3 the classes hold under motion blur, but fewer new defects are "
                     "answered unknown; the shipped model is the mean of such a run and a plain one (edge-train soup)")
    rec.add_argument("--contrast", default="none", choices=("none", "standardize"),
                     help="'standardize': give every image the same gray-level mean and contrast, in training and "
                     "on the device (stored in the model metadata); meant for other cameras/plants "
                     "(docs/cross-plant.md)")
    rec.add_argument("--camera-augment", action=argparse.BooleanOptionalAction, default=True,
                     help="also augment another camera's look: contrast, gamma, blur and sensor noise, and (camera "
                     "recipe 2) exposure gain, motion blur, row banding, lost resolution and JPEG re-encoding (the "
                     "shipped model's recipe: docs/unknown.md)")
    rec.add_argument("--camera-recipe", type=int, default=2, choices=(1, 2, 3),
                     help="1: contrast, gamma, blur, noise up to 3 gray levels; 2: also exposure gain, motion blur, "
                     "row banding, lost resolution, JPEG; 3: recipe 2 with noise up to 10 gray levels and "
                     "motion blur along the rows or columns only")
    rec.add_argument("--polarity-augment", action="store_true",
                     help="invert the gray levels of half the augmented copies: defects that are bright under this "
                     "line's lighting may be dark under another's")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build_evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-train evaluate",
        description="Run a trained model on every image of another dataset folder (no retraining) and report "
        "what it calls them, e.g. GC10-DET's inclusion folder: --data .../gc10/inclusion --expect inclusion.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dir", help="a finished edge-train run directory")
    p.add_argument("--data", required=True, help="folder of images (searched recursively)")
    p.add_argument("--expect", help="the class these images should be called (reports how many are)")
    p.add_argument("--name", help="report name (default: <parent>_<folder>, e.g. gc10_inclusion)")
    p.add_argument("--out", help="output folder (default: RUN_DIR)")
    p.add_argument("--grid", type=int, default=16, help="max thumbnails in the prediction grid")
    p.add_argument("--polarity", choices=POLARITY_MODES, default=AS_IS,
                   help="test-time polarity, as edge-classify --polarity: auto reads each image as captured and "
                   "inverted and keeps the reading closer to the training images (first embeds the run's "
                   "training split once)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build_soup_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-train soup",
        description="Average the weights of runs that started from the same weights (same --weights, --seed and "
        "split; trained with different settings, e.g. with and without --consistency) into one model: a new run "
        "directory that edge-export takes like any other. Refused when the mean is less right on the validation "
        "images than the runs. Measured in docs/training.md.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished edge-train runs (two or more)")
    p.add_argument("--name", required=True, help="name of the new run directory")
    p.add_argument("--runs", default="runs", help="folder that holds run directories")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build_refine_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-train refine",
        description="Fine-tune every layer of a finished run on fresh camera-changed copies of its training images, "
        "with its pooled features held where they were (the features the unknown score reads): a classifier more "
        "robust to another camera, without losing new kinds of defect. Writes a new run directory that edge-export "
        "takes like any other; refused when it is less right on the validation images than the run. Every layer "
        "trains: 40–60 min for 12 epochs on a 2-core AVX-512 CPU; an AVX2-only one runs Keras about 3.4x slower. "
        "Measured in docs/training.md and docs/benchmarks.md.",
        formatter_class=HelpFormatter,
    )
    defaults = RefineSettings()
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished edge-train run (or soup)")
    p.add_argument("--name", required=True, help="name of the new run directory")
    p.add_argument("--runs", default="runs", help="folder that holds run directories")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs, each on new augmented copies")
    p.add_argument("--lr", type=float, default=defaults.learning_rate,
                   help="Adam learning rate at the start, decayed to zero (cosine)")
    p.add_argument("--anchor", type=float, default=defaults.anchor,
                   help="weight of the pooled-feature anchor (1 - cosine to the starting model's features of the "
                   "copy without the camera look); 0: cross-entropy alone")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--workers", type=int, default=defaults.workers, help="threads drawing the augmented copies")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _print_accuracy(metrics: dict) -> None:
    for split in ("val", "test"):
        m = metrics[split]
        print(f"{split} accuracy: {100 * m['accuracy']:.2f} % ({m['correct']}/{m['total']})")


def _soup(argv: list[str]) -> int:
    args = build_soup_parser().parse_args(argv)
    setup_logging(args.verbose)
    from train.soup import soup_run

    out_dir = Path(args.runs) / args.name
    _print_accuracy(soup_run(args.run_dirs, out_dir, progress=not args.no_progress))
    print(f"run directory: {out_dir}")
    return 0


def _refine(argv: list[str]) -> int:
    args = build_refine_parser().parse_args(argv)
    setup_logging(args.verbose)
    from train.refine import refine_run

    settings = RefineSettings(epochs=args.epochs, learning_rate=args.lr, anchor=args.anchor,
                              batch_size=args.batch_size, workers=args.workers)
    out_dir = Path(args.runs) / args.name
    _print_accuracy(refine_run(args.run_dir, out_dir, settings, progress=not args.no_progress))
    print(f"run directory: {out_dir}")
    return 0


def _fit(argv: list[str]) -> int:
    args = build_fit_parser().parse_args(argv)
    setup_logging(args.verbose)
    from train.training_run import TrainOptions, load_options_for_resume

    if args.resume:
        options = load_options_for_resume(args.resume, progress=not args.no_progress)
    else:
        if not args.data:
            build_fit_parser().error("--data is required (or --resume RUN_DIR)")
        name = args.name or datetime.now().strftime("neu-%Y%m%d-%H%M%S")
        options = TrainOptions(
            data=args.data, run_dir=str(Path(args.runs) / name), weights=args.weights, classes=args.classes,
            input_size=args.input_size, unfreeze=args.unfreeze, epochs_stage1=args.epochs_stage1,
            epochs_stage2=args.epochs_stage2, lr_stage1=args.lr_stage1, lr_stage2=args.lr_stage2,
            batch_size=args.batch_size, patience=args.patience, lr_patience=args.lr_patience,
            loss_tie_break=args.loss_tie_break, average_tied_epochs=args.average_tied_epochs,
            aug_copies=args.aug_copies, consistency=args.consistency, val_per_class=args.val_per_class,
            test_per_class=args.test_per_class,
            folds=args.folds, seed=args.seed, split_seed=args.split_seed, skip_bad=args.skip_bad,
            cache_dir=args.cache_dir,
            contrast=args.contrast, camera_augment=args.camera_augment, camera_recipe=args.camera_recipe,
            polarity_augment=args.polarity_augment,
            progress=not args.no_progress,
        )
    try:
        return _train(options)
    except KeyboardInterrupt:
        log.warning("interrupted; continue with: edge-train --resume %s", options.run_dir)
        return 130


def _train(options) -> int:
    from train.training_run import cross_validate, train_run

    if options.folds:
        summary = cross_validate(options)
        print(f"{summary['folds']}-fold cross-validation test accuracy: "
              f"{100 * summary['test_accuracy_mean']:.2f} % ± {100 * summary['test_accuracy_std']:.2f} % "
              f"({summary['test_correct']}/{summary['test_total']}) -> {options.run_dir}/cv_metrics.json")
        return 0
    metrics = train_run(options)
    _print_accuracy(metrics)
    timings = metrics["fit"]["timings"]
    print(f"wall time: trunk-feature cache {timings['trunk_cache_seconds']:.0f} s, "
          f"stage 1 {timings['stage1_seconds']:.0f} s, stage 2 {timings['stage2_seconds']:.0f} s, "
          f"whole command {metrics['wall_seconds_this_invocation']:.0f} s")
    for stage, e in metrics["epoch_seconds"].items():
        print(f"{stage}: {e['epochs']} epochs, {e['mean']:.1f} s/epoch")
    print(f"run directory: {options.run_dir}")
    return 0


def _evaluate(argv: list[str]) -> int:
    args = build_evaluate_parser().parse_args(argv)
    setup_logging(args.verbose)
    from train.evaluate import evaluate_folder

    result = evaluate_folder(
        args.run_dir, args.data, expect=args.expect, name=args.name, out_dir=args.out,
        grid_size=args.grid, progress=not args.no_progress, polarity=args.polarity,
    )
    counts = ", ".join(f"{k} {v}" for k, v in result["predicted_histogram"].items() if v)
    print(f"{result['name']}: {result['classified']} images classified, {len(result['errors'])} unreadable")
    if args.expect:
        print(f"called {args.expect}: {result['expected_count']}/{result['classified']} "
              f"= {100 * result['expected_share']:.1f} %")
    print(f"predicted classes: {counts}")
    if result["inverted"] is not None:
        print(f"--polarity {args.polarity}: inverted reading kept for {result['inverted']}/{result['classified']}")
    print(f"report: {result['report_json']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fit":
        argv = argv[1:]
    return dispatch(argv, {"evaluate": _evaluate, "soup": _soup, "refine": _refine}, _fit, log)


if __name__ == "__main__":
    sys.exit(main())
