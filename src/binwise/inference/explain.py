"""Grad-CAM (Selvaraju et al., 2017): which part of the photo made the model choose a class.

The class score's gradient with respect to the backbone's last feature map, averaged over space,
weighs each channel; the weighted sum of channels (negative evidence clipped) is the heatmap. It
needs gradients, so it runs on the PyTorch model only: pass a .safetensors model file, or a
Classifier loaded from one. An ONNX model raises BinwiseError (without importing torch).
``plots.grad_cam_figure`` draws an overlay with its class, probability and colour bar.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ..images import ImageSource, load_for_model, open_image, resize_and_crop
from .classifier import Classifier
from ..preprocessing import Preprocessing


def grad_cam(model_file_or_classifier: str | os.PathLike | Classifier, image: ImageSource,
             class_index: int | None = None) -> tuple[np.ndarray, int]:
    """Heatmap (H x W, values in [0, 1], at the model's input size) and the class it explains
    (the top-1 class unless ``class_index`` is given)."""
    classifier = (model_file_or_classifier if isinstance(model_file_or_classifier, Classifier)
                  else Classifier.load(model_file_or_classifier))
    model = classifier.torch_model  # an ONNX model is refused here, before torch is needed
    import torch
    import torch.nn.functional as F

    num_classes = classifier.taxonomy.num_classes
    if class_index is not None and not 0 <= class_index < num_classes:
        raise ValueError(f"class index {class_index} is out of range (the model has {num_classes} classes)")
    pixels = load_for_model(image, classifier.preprocessing)[None]
    x = torch.from_numpy(pixels).to(next(model.parameters()).device)
    # torch.autograd.grad computes only this gradient: no parameter .grad is written, so
    # concurrent calls on one model do not interfere.
    with torch.enable_grad():
        features = model.backbone(x)
        scores = model.head(features)[0]
        if class_index is None:
            class_index = int(scores.argmax())
        (gradient,) = torch.autograd.grad(scores[class_index], features)
    with torch.no_grad():
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * features).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        peak = cam.max()
        cam = cam / peak if peak > 0 else cam  # all zero: no positive evidence anywhere
    return cam.cpu().numpy(), class_index


def overlay(image: ImageSource, heatmap: np.ndarray, alpha: float = 0.5,
            preprocessing: Preprocessing | None = None) -> Image.Image:
    """The photo, resized and centre-cropped as the model saw it (pass the model's
    ``preprocessing``; by default the shorter side is fitted to the heatmap), with the heatmap
    blended over it in jet colours."""
    from matplotlib import colormaps

    size = heatmap.shape[0]
    pre = preprocessing or Preprocessing(input_size=size, resize_size=size)
    crop = resize_and_crop(open_image(image), pre)
    if crop.size != (heatmap.shape[1], size):
        crop = crop.resize((heatmap.shape[1], size), Image.BILINEAR)
    colours = (colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255).astype(np.uint8)
    return Image.blend(crop, Image.fromarray(colours), alpha)
