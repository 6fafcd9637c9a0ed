"""Batch-1 GPU inference by replaying a captured CUDA graph.

A MobileNetV2 forward is about a hundred small kernels. At batch 1 the GPU finishes each before
the CPU has launched the next, so eager latency is bound by kernel launches (4.4 ms measured on an
H200); a CUDA graph launches all of them with one call.
"""

from __future__ import annotations

import torch


class CudaGraphModel:
    """Calls ``model`` on inputs shaped like ``example`` by replaying one captured graph.

    Not thread-safe: the captured graph reads one static input buffer (callers hold a lock).
    """

    def __init__(self, model: torch.nn.Module, example: torch.Tensor):
        if example.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA input")
        self.model = model.eval()
        self.static_input = example.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # cuDNN picks its algorithms here, outside the capture
                self.model(self.static_input)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.static_output = self.model(self.static_input)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != self.static_input.shape or x.dtype != self.static_input.dtype:
            raise ValueError(f"captured for {tuple(self.static_input.shape)} {self.static_input.dtype}, "
                             f"got {tuple(x.shape)} {x.dtype}")
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output.clone()
