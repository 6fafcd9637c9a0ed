"""GPU throughput of MobileNetV2, side by side, against torchvision's eager fp32 model.

Prepared to run in one go on a lent H100/H200 (see docs/benchmarks.md):

    python benchmarks/speed/gpu.py --out gpu.json            # ~5 minutes on an H200

It measures inference (batch 256) and training steps (batch 256) for:
torchvision eager fp32 (baseline), binwise bf16 + channels_last, and the same under torch.compile
(compile time reported); batch-1 latency, eager against a CUDA graph (GPU only); then the
memory-bound floor: the bytes each image's activations must move through device memory at the
measured copy bandwidth. ``--quick`` runs tiny sizes on CPU, which the
tests use to keep this script working on machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torchvision

from binwise.inference.cuda_graph import CudaGraphModel
from binwise.model.network import MobileNetV2
from binwise.preprocessing import IMAGENET, with_pixel_input


def timed(fn, steps: int, warmup: int, sync) -> float:
    """Seconds per call of ``fn``, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def copy_bandwidth(device: torch.device, megabytes: int, sync) -> float:
    """Device-memory bandwidth in bytes/s from a large copy (each byte read once, written once)."""
    src = torch.empty(megabytes << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), 20, 3, sync)
    return 2 * src.numel() / seconds


def activation_bytes_per_image(model: torch.nn.Module, size: int, dtype_bytes: int) -> int:
    """Bytes read and written by every conv's input and output for one image: a lower bound on
    memory traffic when everything between convs (BN, ReLU6, residual add) is fused into them."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += (inputs[0].numel() + output.numel()) * dtype_bytes

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def variants(device: torch.device, compile_: bool):
    """(name, model factory, autocast dtype or None, channels_last)."""
    yield "torchvision eager fp32", lambda: torchvision.models.mobilenet_v2(), None, False
    yield "binwise bf16 channels_last", lambda: MobileNetV2(), torch.bfloat16, True
    if compile_:
        yield "binwise bf16 channels_last compile", lambda: torch.compile(MobileNetV2()), torch.bfloat16, True


def measure(args) -> dict:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.backends.cudnn.benchmark = True
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
               "torch": torch.__version__, "torchvision": torchvision.__version__, "batch": args.batch,
               "rows": []}
    for name, factory, dtype, channels_last in variants(device, args.compile):
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = factory().to(device, memory_format=memory_format)
        inputs = x.to(memory_format=memory_format)
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def infer():
            with torch.inference_mode(), autocast:
                model(inputs)

        def train_step():
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(inputs), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        model.eval()
        start = time.perf_counter()
        infer()
        sync()
        first_call = time.perf_counter() - start  # includes compilation for the compiled variant
        infer_s = timed(infer, args.steps, args.warmup, sync)
        model.train()
        train_s = timed(train_step, args.steps, args.warmup, sync)
        results["rows"].append({"variant": name, "first_call_s": round(first_call, 2),
                                "inference_img_s": round(args.batch / infer_s),
                                "train_img_s": round(args.batch / train_s)})
    if device.type == "cuda":
        results["batch1"] = batch1_latency(device, args.size, sync)
    bandwidth = copy_bandwidth(device, args.copy_mb, sync)
    per_image = activation_bytes_per_image(MobileNetV2(), args.size, 2)
    floor = bandwidth / per_image
    results["memory_floor"] = {"copy_bandwidth_GB_s": round(bandwidth / 1e9, 1),
                               "bf16_activation_bytes_per_image": per_image,
                               "inference_ceiling_img_s": round(floor),
                               # training reads and writes each activation about three times as often
                               "train_ceiling_img_s": round(floor / 3)}
    for row in results["rows"]:
        row["inference_of_ceiling"] = round(row["inference_img_s"] / floor, 3)
        row["train_of_ceiling"] = round(row["train_img_s"] / (floor / 3), 3)
    return results


def batch1_latency(device: torch.device, size: int, sync) -> dict:
    """One photo's latency (uint8 pixels in, normalised on the device, fp32 logits back on the
    host), eager against a replayed CUDA graph: what ``Classifier.load(..., device="cuda")`` runs."""
    model = with_pixel_input(MobileNetV2(num_classes=26), IMAGENET).to(device, memory_format=torch.channels_last)
    pixels = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8)

    def eager():
        with torch.inference_mode():
            model(pixels.to(device)).cpu()

    graph = CudaGraphModel(model, pixels.to(device))
    rows = {}
    for name, fn in (("eager_ms", eager), ("cuda_graph_ms", lambda: graph(pixels.to(device)).cpu())):
        rows[name] = round(1000 * timed(fn, 200, 20, sync), 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--copy-mb", type=int, default=1024)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test on CPU")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.size, args.steps, args.warmup, args.copy_mb, args.compile = 2, 64, 1, 1, 8, False
    results = measure(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
