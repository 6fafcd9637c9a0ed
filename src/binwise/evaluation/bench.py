"""Inference speed, side by side: PyTorch eager fp32, onnxruntime fp32 and onnxruntime int8.

Two measures, both including JPEG decoding and preprocessing (what a user waits for):

- one photo: ``Classifier.predict`` on a 500x375 JPEG held in memory (decode + preprocess + model),
  repeated; median (p50) and p90 latency;
- a folder: photos read from disk through ``Classifier.predict_stream`` (worker threads that
  each decode a batch and run the model on it); photos per second.

The ONNX files are exported from the given model file unless passed in; an .onnx model file is
measured alone (no torch needed). With ``repeat`` > 1 the
backends are measured in interleaved rounds and each reports its median and range over them.
"""

from __future__ import annotations

import io
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from ..images import is_image_file, open_image
from ..inference.classifier import EXPORTED_SUFFIXES, Classifier

PHOTO_SIZE = (500, 375)


def sample_jpeg(photo: str | os.PathLike, size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """A real photo resized to ``size`` and encoded as a JPEG, the size of a typical upload."""
    buffer = io.BytesIO()
    open_image(photo).resize(size).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def image_library() -> str:
    """Which distribution provides PIL (Pillow, or Pillow-SIMD, whose resize is faster) and its version."""
    from importlib.metadata import packages_distributions

    from PIL import Image

    return f"{'/'.join(packages_distributions().get('PIL', ['?']))} {Image.__version__}"


def bench_photos(data_dir: Path, count: int) -> list[Path]:
    """All test photos, topped up with training photos to ``count``."""
    splits = [data_dir / "test", data_dir / "train"] if (data_dir / "test").is_dir() else [data_dir]
    photos = [p for split in splits for p in sorted(split.rglob("*")) if is_image_file(p)]
    return photos[:count]


def single_photo_latency(classifier: Classifier, jpeg: bytes, runs: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        classifier.predict(jpeg)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.predict(jpeg)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90))}


def folder_throughput(classifier: Classifier, photos: list[Path], batch_size: int, workers: int) -> dict:
    for _ in classifier.predict_stream(photos[:batch_size], batch_size=batch_size, workers=workers):
        pass  # warm up: first-call allocations, thread pools
    start = time.perf_counter()
    done = sum(1 for _ in classifier.predict_stream(photos, batch_size=batch_size, workers=workers))
    elapsed = time.perf_counter() - start
    return {"photos": done, "images_per_s": done / elapsed}


def run_bench(model: str | os.PathLike, onnx_fp32: str | os.PathLike | None = None,
              onnx_int8: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
              photos: int = 500, runs: int = 100, threads: int | None = None, batch_size: int = 32,
              workers: int | None = None, backends: tuple[str, ...] = ("torch", "onnx-fp32", "onnx-int8"),
              repeat: int = 1, log=print) -> dict:
    """Measure each backend in turn, ``repeat`` rounds of all of them; returns the numbers (each
    backend's median over the rounds, and every round) and the settings they were taken with.

    Rounds interleave the backends so that each sees the machine in the same states: on a shared
    virtual machine whose speed drifts over minutes, that keeps the comparison fair, and the range
    over rounds shows how far one run can be trusted.
    """
    from ..paths import resolve_data

    threads = threads or os.cpu_count() or 1
    workers = workers or threads
    data_dir = resolve_data(data_dir)
    folder = bench_photos(data_dir, photos)
    jpeg = sample_jpeg(folder[0])
    results = {"settings": {"model": str(model), "threads": threads, "workers": workers,
                            "batch_size": batch_size, "photo": f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG "
                            f"({len(jpeg)} bytes) from {folder[0]}", "folder_photos": len(folder),
                            "runs": runs, "repeat": repeat, "cpu": platform.processor() or platform.machine(),
                            "cpus_visible": os.cpu_count(), "image_library": image_library(),
                            "malloc_env": {k: v for k, v in os.environ.items()
                                           if k.startswith("MALLOC_") or k == "LD_PRELOAD"}},
               "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        suffix = Path(model).suffix.lower()
        if suffix in EXPORTED_SUFFIXES:  # an exported model alone, named by its format and precision
            classifier = Classifier.load(model, threads=threads)
            name = f"{suffix[1:]}-{classifier.meta.export.get('precision', 'fp32')}"
            files, classifiers = {name: model}, {name: classifier}
        else:
            files = {"torch": model, "onnx-fp32": onnx_fp32, "onnx-int8": onnx_int8}
            classifiers = {}
            for name in backends:
                if files[name] is None:
                    from ..export import export_onnx

                    log(f"exporting {name} ...")
                    files[name] = export_onnx(model, Path(tmp) / f"{name}.onnx", int8=name == "onnx-int8")
                classifiers[name] = Classifier.load(files[name], threads=threads)
        rounds = {name: [] for name in classifiers}
        for round_number in range(1, repeat + 1):
            for name, classifier in classifiers.items():
                log(f"measuring {name}" + (f", round {round_number} of {repeat}" if repeat > 1 else "") + " ...")
                entry = {**single_photo_latency(classifier, jpeg, runs),
                         **folder_throughput(classifier, folder, batch_size, workers)}
                rounds[name].append(entry)
                log(format_row(name, entry))
    for name, measured in rounds.items():
        results["backends"][name] = {"file": str(files[name]),
                                     **{key: float(np.median([m[key] for m in measured]))
                                        for key in ("p50_ms", "p90_ms", "images_per_s")},
                                     "photos": measured[0]["photos"], "rounds": measured}
    return results


def format_row(name: str, entry: dict) -> str:
    line = (f"{name:<10} photo p50 {entry['p50_ms']:7.2f} ms  p90 {entry['p90_ms']:7.2f} ms   "
            f"folder {entry['images_per_s']:7.1f} img/s ({entry['photos']} photos)")
    rounds = entry.get("rounds", [])
    if len(rounds) > 1:
        p50s, speeds = [r["p50_ms"] for r in rounds], [r["images_per_s"] for r in rounds]
        line += (f"   medians of {len(rounds)} rounds; ranges: p50 {min(p50s):.2f}-{max(p50s):.2f} ms, "
                 f"folder {min(speeds):.1f}-{max(speeds):.1f} img/s")
    return line


def format_table(results: dict) -> str:
    rows = results["backends"]
    lines = [format_row(name, entry) for name, entry in rows.items()]
    if "torch" in rows:
        torch_rounds = rows["torch"]["rounds"]
        for name in ("onnx-fp32", "onnx-int8"):
            if name in rows:
                line = (f"{name} vs torch: photo {rows['torch']['p50_ms'] / rows[name]['p50_ms']:.1f}x "
                        f"faster, folder {rows[name]['images_per_s'] / rows['torch']['images_per_s']:.1f}x")
                if len(torch_rounds) > 1:  # rounds interleave the backends, so compare round by round
                    photo = [t["p50_ms"] / r["p50_ms"] for t, r in zip(torch_rounds, rows[name]["rounds"])]
                    folder = [r["images_per_s"] / t["images_per_s"] for t, r in zip(torch_rounds, rows[name]["rounds"])]
                    line += (f" (round by round: photo {min(photo):.1f}-{max(photo):.1f}x, "
                             f"folder {min(folder):.1f}-{max(folder):.1f}x)")
                lines.append(line)
    s = results["settings"]
    lines.append(f"threads {s['threads']}, folder workers {s['workers']}, batch {s['batch_size']}, "
                 f"{s['cpus_visible']} CPUs visible, malloc env {s['malloc_env'] or 'default'}, "
                 f"{s['image_library']}")
    return "\n".join(lines)
