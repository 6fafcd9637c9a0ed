"""Load test of ``binwise serve``: many concurrent clients on loopback, for a fixed time.

    python benchmarks/load.py MODEL                       # 50 clients for 60 s
    python benchmarks/load.py MODEL --seconds 15 --clients 20 --out load.json

Starts ``binwise serve MODEL`` on 127.0.0.1 (a free port), warms it up, then runs ``--clients``
concurrent clients (asyncio + httpx), each posting real garbage26 test photos back to back as
multipart uploads until ``--seconds`` have passed. Reports requests, errors (anything but HTTP 200;
must be 0), throughput, latency percentiles, the server's batch sizes and its resident memory
(VmRSS / VmHWM from /proc/PID/status) before and after. Writes JSON and prints a Markdown table.
The clients run on the same machine as the server, so they take CPU from it: on a small machine
the numbers are a floor. Exits 1 if any request failed.
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
from binwise.serve_process import serving


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a binwise .safetensors model (or .onnx) to serve")
    parser.add_argument("--seconds", type=float, default=60, help="how long the clients send (default 60)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--data", help="garbage26 folder (default: $BINWISE_DATA or ../shared)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, help="server inference threads (default: all cores)")
    parser.add_argument("--warmup", type=int, default=5, help="sequential requests before measuring")
    parser.add_argument("--out", type=Path, default=Path("load.json"), help="JSON results (default load.json)")
    args = parser.parse_args()

    test_dir = resolve_data(args.data) / "test"
    photos = [(p.name, p.read_bytes()) for p in sorted(test_dir.glob("*/*.jpg"))]
    if not photos:
        sys.exit(f"load: no photos under {test_dir}")
    log_path = args.out.with_suffix(".serve.log")
    serve_args = ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning"]
    if args.threads:
        serve_args += ["--threads", str(args.threads)]
    with serving(args.model, log_path, *serve_args) as (url, process):
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
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
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
