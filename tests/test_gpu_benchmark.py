import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_script_runs_quick_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks/speed/gpu.py"), "--quick", "--device", "cpu",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["rows"]] == ["torchvision eager fp32", "binwise bf16 channels_last"]
    assert all(r["inference_img_s"] > 0 and r["train_img_s"] > 0 for r in result["rows"])
    assert result["memory_floor"]["bf16_activation_bytes_per_image"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_channels_last_matches_fp32_on_gpu():
    from binwise.model.network import MobileNetV2

    model = MobileNetV2().cuda().eval()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = model(x.to(memory_format=torch.channels_last)).float()
    assert (fast - reference).norm() / reference.norm() < 0.05
