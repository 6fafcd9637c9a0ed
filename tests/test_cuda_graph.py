import pytest
import torch

from binwise.cuda_graph import CudaGraphModel
from binwise.model import MobileNetV2


def test_cpu_input_is_refused():
    with pytest.raises(ValueError, match="CUDA"):
        CudaGraphModel(MobileNetV2(width_mult=0.35), torch.zeros(1, 3, 64, 64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graph_replay_matches_eager():
    model = MobileNetV2(num_classes=26).cuda().eval()
    x = torch.randn(1, 3, 224, 224, device="cuda")
    runner = CudaGraphModel(model, x, dtype=None)
    for _ in range(2):
        x = torch.randn(1, 3, 224, 224, device="cuda")
        with torch.inference_mode():
            expected = model(x)
        assert torch.allclose(runner(x), expected, atol=1e-4, rtol=1e-3)
