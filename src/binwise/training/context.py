"""What every stage of one training run shares: the settings, where things go, how to report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

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
