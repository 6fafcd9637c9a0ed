"""How much a photo looks like the training photos: the ``unknown`` score (see ``binwise.model.status``).

The score is the cosine similarity between a photo's pooled backbone feature (the 1280 numbers the
head's linear layer reads) and its nearest training photo's. The training photos' features
(``REFERENCE_KEY``, float16, one row per photo, at most ``MAX_REFERENCE`` rows) are saved in the
model file beside the weights. ``with_similarity`` builds the PyTorch model that returns it beside
the logits, the one the PyTorch Classifier runs; an ONNX export of that module, with outputs
``logits`` (N, classes) and ``similarity`` (N,), carries the score inside the graph.
"""

from __future__ import annotations

import numpy as np

REFERENCE_KEY = "novelty.reference"  # the safetensors tensor of reference features
MAX_REFERENCE = 8192  # rows kept (evenly spaced) so a large dataset does not bloat the model file


def normalized(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def nearest_similarity(features: np.ndarray, reference: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Cosine similarity of each row of ``features`` to its nearest row of ``reference``."""
    ref = normalized(reference)
    rows = normalized(features)
    return np.concatenate([(rows[i:i + batch] @ ref.T).max(1) for i in range(0, len(rows), batch)]) \
        if len(rows) else np.empty(0, np.float32)


def reference_rows(count: int) -> np.ndarray:
    """Which of ``count`` training photos are kept as reference (all, or ``MAX_REFERENCE`` evenly spaced)."""
    if count <= MAX_REFERENCE:
        return np.arange(count)
    return np.linspace(0, count - 1, MAX_REFERENCE).round().astype(np.int64)


def with_similarity(pixel_model, model, reference):
    """``pixel_model`` (``preprocessing.with_pixel_input(model, ...)``) returning
    ``(logits, similarity)``: the backbone runs once, its pooled feature feeds the head and the
    nearest-reference cosine similarity. ``reference``: (R, C) torch tensor of training features."""
    import torch

    class ScoredModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pixel_model = pixel_model
            self.model = model
            reference_unit = reference.float() / reference.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
            self.register_buffer("reference", reference_unit.T.contiguous())  # (C, R)

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = pixels.permute(0, 3, 1, 2).float() * self.pixel_model.scale + self.pixel_model.offset
            pooled = self.model.backbone(x).mean((2, 3))
            logits = self.model.head(pooled)
            unit = pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return logits, (unit @ self.reference).amax(1)

    return ScoredModel().eval()
