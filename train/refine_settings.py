"""Settings of ``edge-train refine`` (train/refine.py), apart so that the command line reads them without Keras."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RefineSettings:
    epochs: int = 12
    learning_rate: float = 1e-4  # Adam, cosine decay to zero over every step
    anchor: float = 10.0  # weight of the pooled-feature anchor, 1 - cosine; 0: cross-entropy alone
    batch_size: int = 32
    workers: int = 4  # threads drawing the augmented copies
