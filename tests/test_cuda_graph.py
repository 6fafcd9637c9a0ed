import numpy as np
import pytest
import torch
from inference_models import garbage26_test_photos, tiny_model, tiny_onnx

from binwise.inference.cuda_graph import CudaGraphModel
from binwise.errors import BinwiseError
from binwise.model.network import MobileNetV2
from binwise.inference.classifier import Classifier

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_input_is_refused():
    with pytest.raises(ValueError, match="CUDA"):
        CudaGraphModel(MobileNetV2(width_mult=0.35), torch.zeros(1, 3, 64, 64))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_cuda_device_without_a_gpu_is_a_clear_error():
    with pytest.raises(BinwiseError, match="needs a CUDA GPU, and torch finds none"):
        Classifier.load(tiny_model(), device="cuda")


def test_onnx_model_on_cuda_is_refused():
    with pytest.raises(BinwiseError, match="tiny.onnx: an exported .onnx model runs on the CPU"):
        Classifier.load(tiny_onnx(), device="cuda")


@needs_cuda
def test_graph_replay_matches_eager():
    model = MobileNetV2(num_classes=26).cuda().eval()
    x = torch.randn(1, 3, 224, 224, device="cuda")
    runner = CudaGraphModel(model, x)
    for _ in range(2):
        x = torch.randn(1, 3, 224, 224, device="cuda")
        with torch.inference_mode():
            expected = model(x)
        assert torch.allclose(runner(x), expected, atol=1e-4, rtol=1e-3)


@needs_cuda
def test_gpu_classifier_agrees_with_cpu_at_batch_1_and_batched():
    cpu, gpu = Classifier.load(tiny_model()), Classifier.load(tiny_model(), device="cuda")
    photos = garbage26_test_photos()[::10]
    for photo in photos[:3]:  # batch 1: the CUDA graph, captured on the first call
        np.testing.assert_allclose(gpu.predict_arrays(gpu.load_image(photo)[None]),
                                   cpu.predict_arrays(cpu.load_image(photo)[None]), atol=1e-3)
    batch = np.stack([cpu.load_image(p) for p in photos])
    np.testing.assert_allclose(gpu.predict_arrays(batch), cpu.predict_arrays(batch), atol=1e-3)
