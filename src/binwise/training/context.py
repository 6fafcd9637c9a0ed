"""What every stage of one training run shares: the settings, where things go, how to report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..preprocessing import Preprocessing
from ..progress import SILENT, Progress
from .config import TrainConfig


@dataclass
class RunContext:
    config: TrainConfig
    pre: Preprocessing  # the pretrained weights' preprocessing, which the trained model keeps
    run_dir: Path
    cache_dir: Path | None  # feature / activation cache (None: the default)
    device: torch.device
    progress: Progress = SILENT
    skipped: set[str] = field(default_factory=set)  # errors naming the unreadable photos met so far
    started: float = field(default_factory=time.perf_counter)  # when the run began (auto mode's budget)

    def checkpoints(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / name


@dataclass
class PhaseRecord:
    """One phase as the run reports it (log.csv, curves.png)."""

    name: str
    history: list[dict]


@dataclass
class HeldOut:
    """A model's outputs on photos it did not train on (``calibration`` fits thresholds on them)."""

    logits: np.ndarray  # (N, classes)
    labels: np.ndarray  # (N,)
    similarity: np.ndarray  # (N,) to the nearest photo it trained on
    method: str  # in words, for the model file


@dataclass
class TrainingOutcome:
    """What a mode's training gives the run: the phases it ran and, for auto mode, what it chose."""

    phases: list[PhaseRecord]
    choice: str = ""  # the mode whose model is kept ("head" or "finetune")
    reason: str = ""  # why, in one sentence
    val_acc: float | None = None  # the kept model's validation accuracy
    details: dict = field(default_factory=dict)  # extra figures for metrics.json
    # the weights of the model trained without the validation photos, kept when the final model was
    # refit on train + val after it (finetune mode): calibration scores it on validation
    held_out_state: dict | None = None
    trained_on_val: bool = False  # the final model saw the validation photos
    # more held-out photos for calibration beside the validation split: part of the training split,
    # scored by a model of the same recipe trained without it (auto mode's cross-fitting)
    cross_fitted: HeldOut | None = None
