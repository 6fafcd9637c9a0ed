"""Helpers for tests that compare models: random weights with non-default batch norm, and the
relative L2 error between two outputs."""

import numpy as np
import torch


def randomize_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm tensors far from their defaults, so a dropped or swapped one changes the outputs."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def relative_l2(actual, expected) -> float:
    """||actual - expected|| / ||expected|| for numpy arrays or CPU tensors."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))
