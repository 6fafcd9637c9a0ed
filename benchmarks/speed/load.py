"""Load test of ``binwise serve``: many concurrent clients on loopback, for a fixed time.

    python benchmarks/speed/load.py MODEL                       # 50 clients for 60 s
    python benchmarks/speed/load.py MODEL --seconds 15 --clients 20 --out load.json
    python benchmarks/speed/load.py MODEL --burst 100           # 100 clients at once, each a ~5 MB photo

Starts ``binwise serve MODEL`` on 127.0.0.1 (a free port), warms it up, then runs ``--clients``
concurrent clients (asyncio + httpx), each posting real garbage26 test photos back to back as
multipart uploads until ``--seconds`` have passed. Reports requests, errors (anything but HTTP 200;
must be 0), throughput, latency percentiles, the server's batch sizes and its resident memory
(VmRSS / VmHWM from /proc/PID/status) before and after. Writes JSON and prints a Markdown table.
The clients run on the same machine as the server, so they take CPU from it: on a small machine
the numbers are a floor. Exits 1 if any request failed.

``--burst N`` measures memory instead: after the warm-up, N clients each upload one large JPEG at
the same moment (made at run time in a temporary folder from garbage26 training photos: upscaled to
4032x3024, 12 megapixels like a phone's, with sensor-like noise so that at quality 95 each is about
5 MB; every other one progressive; a client answered 503 sends again after its Retry-After), then
the server's VmRSS is sampled every second for ``--after`` seconds with no requests. Reports idle
RSS (after the warm-up), peak (VmHWM), RSS 10, 30 and 60 s after the burst, and whether it is back
to at most 1.5x idle by the end. Exits 1 if it is not, or if any upload's last answer was not 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from binwise.paths import resolve_data
from binwise.serving.process import serving


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM) of process ``pid``, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = round(int(rest.split()[0]) / 1024, 1)
    return values


async def run_clients(url: str, photos: list[tuple[str, bytes]], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        deadline = time.monotonic() + seconds

        async def client(offset: int) -> None:
            i = offset
            while time.monotonic() < deadline:
                name, data = photos[i % len(photos)]
                i += clients
                start = time.perf_counter()
                try:
                    response = await http.post("/v1/classify", files={"file": (name, data, "image/jpeg")})
                    ok = response.status_code == 200
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as e:
                    ok, problem = False, f"{type(e).__name__}: {e}"
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors.append(problem)

        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


BURST_SIZE = (4032, 3024)
RECOVERY_FACTOR = 1.5  # the bound: back to at most 1.5x idle RSS after a burst


def large_photos(sources: list[Path], folder: Path, count: int) -> list[tuple[str, bytes]]:
    """``count`` ~5 MB 12-megapixel JPEGs made from ``sources``: upscaled, with noise like a
    sensor's (an upscaled 224-pixel photo alone compresses to well under 1 MB), every other one
    progressive (whose decoding buffers every DCT coefficient of the image)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = []
    for i, source in enumerate(sources[:count]):
        with Image.open(source) as img:
            pixels = np.asarray(img.convert("RGB").resize(BURST_SIZE, Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(pixels + rng.integers(-14, 15, pixels.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        path = folder / f"large_{i:02d}.jpg"
        Image.fromarray(noisy).save(path, quality=95, progressive=i % 2 == 1)
        photos.append((path.name, path.read_bytes()))
    return photos


async def burst(url: str, photos: list[tuple[str, bytes]], clients: int, attempts: int = 10) -> dict:
    """Every client posts one photo at the same moment, and again after a 503's Retry-After (at
    most ``attempts`` times in all); the final answers' status codes and latencies (retries
    included), and how many 503s came before them."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    busy = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as http:
        async def client(i: int) -> tuple[str, float]:
            nonlocal busy
            name, data = photos[i % len(photos)]
            start = time.perf_counter()
            for _ in range(attempts):
                try:
                    response = await http.post("/v1/classify", files={"file": (name, data, "image/jpeg")})
                    answer = str(response.status_code)
                except httpx.HTTPError as e:
                    answer = type(e).__name__
                    break
                if answer != "503":
                    break
                busy += 1
                await asyncio.sleep(float(response.headers.get("retry-after", 1)))
            return answer, time.perf_counter() - start

        start = time.perf_counter()
        answers = await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - start
    statuses: dict[str, int] = {}
    for answer, _ in answers:
        statuses[answer] = statuses.get(answer, 0) + 1
    latencies = [seconds for answer, seconds in answers if answer == "200"]
    return {"statuses": statuses, "busy_retried": busy, "elapsed": elapsed, "latencies": latencies}


def run_burst(args, url: str, process, warmup: list[tuple[str, bytes]], sources: list[Path]) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        photos = large_photos(sources, Path(folder), args.burst_photos)
    for name, data in warmup:
        httpx.post(f"{url}/v1/classify", files={"file": (name, data, "image/jpeg")}, timeout=120).raise_for_status()
    time.sleep(args.settle)
    idle = memory_mib(process.pid)
    answers = asyncio.run(burst(url, photos, args.burst))
    after = []  # (seconds after the burst, VmRSS MiB)
    started = time.monotonic()
    for second in range(args.after + 1):
        time.sleep(max(0.0, started + second - time.monotonic()))
        after.append((second, memory_mib(process.pid)["VmRSS"]))
    peak = memory_mib(process.pid)["VmHWM"]
    bound = RECOVERY_FACTOR * idle["VmRSS"]
    back_at = next((second for second, rss in after if rss <= bound), None)
    latencies_ms = np.array(answers["latencies"]) * 1000
    return {
        "burst": {"clients": args.burst, "photos": len(photos), "photo_mb": round(
                      float(np.mean([len(data) for _, data in photos])) / 1e6, 2),
                  "photo_size": list(BURST_SIZE), "statuses": answers["statuses"],
                  "busy_retried": answers["busy_retried"],
                  "elapsed_s": round(answers["elapsed"], 2),
                  "latency_ms": {q: round(float(np.percentile(latencies_ms, int(q[1:]))), 1)
                                 for q in ("p50", "p99")} if len(latencies_ms) else None},
        "rss_mib": {"idle": idle["VmRSS"], "peak": peak,
                    **{f"after_{s}s": rss for s, rss in after if s in (0, 10, 30, 60)}, "series": after},
        "bound_mib": round(bound, 1),
        "back_within_bound_after_s": back_at,
        "passed": after[-1][1] <= bound and answers["statuses"] == {"200": args.burst},
    }


def print_burst(result: dict, out: Path) -> None:
    rss, answers = result["rss_mib"], result["burst"]
    print("| clients | photo | answers | 503s retried | burst (s) | idle RSS | peak | +10 s | +30 s | +60 s | "
          "≤ 1.5x idle after | passed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {answers['clients']} | {answers['photo_mb']} MB | {answers['statuses']} | {answers['busy_retried']} | "
          f"{answers['elapsed_s']} | "
          f"{rss['idle']} | {rss['peak']} | {rss.get('after_10s')} | {rss.get('after_30s')} | "
          f"{rss.get('after_60s')} | {result['back_within_bound_after_s']} s | {result['passed']} |")
    print(f"\nRSS in MiB; {os.cpu_count()} CPUs; JSON {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a binwise .safetensors model (or .onnx) to serve")
    parser.add_argument("--seconds", type=float, default=60, help="how long the clients send (default 60)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--burst", type=int, nargs="?", const=100, metavar="CLIENTS",
                        help="measure memory after a burst of this many large uploads instead (default 100)")
    parser.add_argument("--burst-photos", type=int, default=10, help="distinct large photos the burst sends")
    parser.add_argument("--after", type=int, default=60, help="seconds RSS is sampled after the burst")
    parser.add_argument("--settle", type=float, default=3, help="seconds idle after the warm-up before idle RSS")
    parser.add_argument("--data", help="garbage26 folder (default: $BINWISE_DATA or ../shared)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, help="server inference threads (default: all cores)")
    parser.add_argument("--warmup", type=int, default=5, help="sequential requests before measuring")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for binwise serve (repeatable: --serve-arg=--flag --serve-arg=value)")
    parser.add_argument("--out", type=Path, default=Path("load.json"), help="JSON results (default load.json)")
    args = parser.parse_args()

    data_dir = resolve_data(args.data)
    test_dir = data_dir / "test"
    photos = [(p.name, p.read_bytes()) for p in sorted(test_dir.glob("*/*.jpg"))]
    if not photos:
        sys.exit(f"load: no photos under {test_dir}")
    log_path = args.out.with_suffix(".serve.log")
    serve_args = ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning",
                  *args.serve_arg]
    if args.threads:
        serve_args += ["--threads", str(args.threads)]
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    with serving(args.model, log_path, *serve_args) as (url, process):
        if args.burst:
            # one training photo of each class, in turn, as the large photos' sources
            sources = sorted(data_dir.glob("train/*/*.jpg"))[::80]
            result = {"model": httpx.get(f"{url}/v1/model").json()["model"], "serve_args": serve_args,
                      "machine": machine, **run_burst(args, url, process, photos[:args.warmup], sources)}
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print_burst(result, args.out)
            return 0 if result["passed"] else 1
        memory_idle = memory_mib(process.pid)
        for name, data in photos[:args.warmup]:
            httpx.post(f"{url}/v1/classify", files={"file": (name, data, "image/jpeg")}, timeout=120).raise_for_status()
        memory_before = memory_mib(process.pid)
        health_before = httpx.get(f"{url}/healthz").json()
        run = asyncio.run(run_clients(url, photos, args.clients, args.seconds))
        memory_after = memory_mib(process.pid)
        health = httpx.get(f"{url}/healthz").json()
        model = httpx.get(f"{url}/v1/model").json()["model"]

    latencies_ms = np.array(run["latencies"]) * 1000
    batches = health["batches"] - health_before["batches"]
    images = health["images"] - health_before["images"]
    result = {
        "model": model,
        "settings": {"clients": args.clients, "seconds": args.seconds, "max_batch": args.max_batch,
                     "max_wait_ms": args.max_wait_ms, "threads": args.threads, "photos": len(photos)},
        "machine": machine,
        "requests": len(run["latencies"]) + len(run["errors"]),
        "errors": len(run["errors"]),
        "first_errors": run["errors"][:5],
        "elapsed_s": round(run["elapsed"], 2),
        "throughput_rps": round(len(run["latencies"]) / run["elapsed"], 2),
        "latency_ms": {q: round(float(np.percentile(latencies_ms, int(q[1:]))), 1) if len(latencies_ms) else None
                       for q in ("p50", "p90", "p99")} | {"max": round(float(latencies_ms.max()), 1)
                                                          if len(latencies_ms) else None},
        "mean_batch_size": round(images / batches, 2) if batches else None,
        "server_memory_mib": {"idle": memory_idle, "before": memory_before, "after": memory_after},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    lat, mem = result["latency_ms"], result["server_memory_mib"]
    print("| clients | seconds | requests | errors | throughput (req/s) | p50 (ms) | p99 (ms) | "
          "mean batch | RSS before (MiB) | RSS after (MiB) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.clients} | {result['elapsed_s']} | {result['requests']} | {result['errors']} | "
          f"{result['throughput_rps']} | {lat['p50']} | {lat['p99']} | {result['mean_batch_size']} | "
          f"{mem['before']['VmRSS']} | {mem['after']['VmRSS']} | {mem['after']['VmHWM']} |")
    print(f"\nmodel {model}; {os.cpu_count()} CPUs; server log {log_path}; JSON {args.out}")
    for problem in result["first_errors"]:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
