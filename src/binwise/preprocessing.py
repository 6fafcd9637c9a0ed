"""How a model wants its pixels: input size, resize, normalisation. Saved in every model file.

Kept free of torch imports so the ONNX inference path can use it without torch installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow MobileNets take pixels in [-1, 1]: x / 127.5 - 1 == (x / 255 - 0.5) / 0.5
MINUS_ONE_TO_ONE_MEAN = (0.5, 0.5, 0.5)
MINUS_ONE_TO_ONE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocessing:
    """Eval preprocessing: resize the shorter side to ``resize_size``, centre-crop ``input_size``,
    scale to [0, 1], subtract ``mean`` and divide by ``std`` (RGB order)."""

    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    def pixel_affine(self) -> tuple[list[float], list[float]]:
        """Per-channel (scale, offset) with uint8 x * scale + offset == (x / 255 - mean) / std:
        the normalisation as one multiply-add."""
        return ([1.0 / (255.0 * s) for s in self.std], [-m / s for m, s in zip(self.mean, self.std)])

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown preprocessing fields: {sorted(unknown)}")
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)


IMAGENET = Preprocessing()
MINUS_ONE_TO_ONE = Preprocessing(mean=MINUS_ONE_TO_ONE_MEAN, std=MINUS_ONE_TO_ONE_STD)


def with_pixel_input(model, pre: Preprocessing):
    """``model`` behind ``images.normalize`` done in torch: uint8 RGB pixels (N, H, W, 3) in.

    What ``binwise export`` writes to ONNX and what a PyTorch Classifier runs (on a GPU inside its
    CUDA graph). A contiguous NHWC batch permuted to NCHW is channels_last.
    """
    import torch

    scale, offset = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in pre.pixel_affine())

    class PixelInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("scale", scale)
            self.register_buffer("offset", offset)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.model(pixels.permute(0, 3, 1, 2).float() * self.scale + self.offset)

    return PixelInput().eval()
