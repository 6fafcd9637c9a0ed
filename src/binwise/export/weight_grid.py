"""Finding the 8-bit grid a tensor's float values came from.

binwise's backbone comes from the uint8 ImageNet TFLite file: each weight of a layer is
``s * (q - z)`` with that tensor's step ``s`` and integers ``q`` in [0, 255] and ``z``. A model
file does not carry ``s``, so the int8 exports (``onnx_file``, ``tflite_grid``) find it from the
float values, to give such a layer scales on that grid and so weights that are exact.
"""

from __future__ import annotations

import numpy as np

SOURCE_LEVELS = 256  # an 8-bit source has at most 256 distinct values
TOLERANCE = 0.01  # in steps: float32 rounding and batch-norm folding leave values ~1e-3 step off the grid


def grid_step(values: np.ndarray) -> float | None:
    """The step ``s`` of the 8-bit grid that ``values`` lie on, or None if they lie on none: about
    the smallest gap between two distinct values, every value an integer multiple of it within
    ``TOLERANCE`` (so zero is on the grid, as symmetric int8 needs) and at most
    ``SOURCE_LEVELS - 1`` steps from the smallest value to the largest."""
    distinct = np.unique(values.astype(np.float64))
    if distinct.size < 2:
        return None
    gap = float(np.diff(distinct).min())
    if (distinct[-1] - distinct[0]) / gap > SOURCE_LEVELS - 1 + TOLERANCE:
        return None
    multiples = np.round(distinct / gap)
    if np.abs(distinct / gap - multiples).max() > TOLERANCE:
        return None
    # float32 rounds each value, and so the smallest gap, by up to 1e-5 step: fit the step to all of them
    return float(multiples @ distinct / (multiples @ multiples))


def uint8_grid(values: np.ndarray) -> tuple[float, int] | None:
    """(step, zero point) when every value is step * (q - zero point) for an integer q in [0, 255]
    (``grid_step``), as weights dequantized from a uint8 file are; else None."""
    step = grid_step(values)
    if step is None:
        return None
    zero_point = round(-float(values.min()) / step)
    if zero_point < 0 or float(values.max()) / step + zero_point > SOURCE_LEVELS - 1 + TOLERANCE:
        return None
    return step, zero_point
