"""`pgmm serve` under load: requests/s and latency at 1, 4 and 16 concurrent clients, batching on vs off.

    python benchmarks/serve_load.py [--run RUN] [--clients 1 4 16] [--requests 64] [--num-beams 3]
                                    [--max-new-tokens 20] [--batch 16] [--json OUT]

The server is the real command (``python -m pgmm_core serve``) in its own process, on loopback;
"batching off" is the same command with ``--max-batch-size 1``. Clients are threads of this process,
each sending its share of ``--requests`` captioning requests (multipart uploads of different small
pictures) one after another; latency is from sending a request to reading its whole answer. Both
servers are up at once and are measured in turns (the order alternating each round), and the
fastest of ``--rounds`` measurements of each setting is kept, so that load from other jobs on a
shared machine weighs on both alike. Without
``--run`` a tiny run is trained first (about a minute). Every answer is checked: batching on and off
must give the same caption for the same request.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def train_tiny_run(folder: Path) -> Path:
    from pgmm_core.testing import run_train, tiny_config

    config = tiny_config(folder / "run", train={"epochs": 1, "max_steps": 8, "eval_every": 8})
    result = run_train(config, folder)
    if result.returncode != 0:
        sys.exit(f"training the tiny run failed:\n{result.stderr[-3000:]}")
    return folder / "run"


def pictures(count: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        pixels = rng.integers(0, 256, (48 + i % 16, 64, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n\r\n'.encode()
                 + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Server:
    """``python -m pgmm_core serve`` on a free loopback port, until :meth:`stop`."""

    def __init__(self, run: Path, batch: int) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgmm_core", "-q", "serve", "--run", str(run), "--checkpoint", "last", "--port",
             str(self.port), "--max-batch-size", str(batch), "--queue-size", "256", "--no-ask"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                sys.exit(f"the server stopped:\n{self.process.stderr.read()[-3000:]}")
            try:
                if self.get("/v1/health")["status"] == "ok":
                    return
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("the server did not start in 5 minutes")
                time.sleep(0.2)

    def get(self, path: str) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def caption(self, body: bytes, content_type: str) -> tuple[float, str]:
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            connection.request("POST", "/v1/caption", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {data[:300]!r}")
        return time.perf_counter() - started, json.loads(data)["caption"]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def measure(server: Server, bodies: list[tuple[bytes, str]], clients: int) -> dict:
    """Each client sends its share of ``bodies`` in turn; all clients at once."""
    shares = [list(range(i, len(bodies), clients)) for i in range(clients)]
    results: dict[int, tuple[float, str]] = {}

    def client(indices: list[int]) -> None:
        for i in indices:
            results[i] = server.caption(*bodies[i])

    before = server.get("/v1/health")
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, shares))
    elapsed = time.perf_counter() - started
    after = server.get("/v1/health")
    latencies = sorted(results[i][0] for i in range(len(bodies)))
    batches = after["batches"] - before["batches"]
    return {"clients": clients, "requests": len(bodies), "seconds": elapsed,
            "requests_per_s": len(bodies) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
            "mean_batch": len(bodies) / batches if batches else None,
            "captions": [results[i][1] for i in range(len(bodies))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run directory (default: train a tiny run first)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=64, help="requests per measurement (default 64)")
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="--max-batch-size with batching on (default 16)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements of each setting, on and off taking turns; the fastest is kept")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "serve_load.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_tiny_run(Path(tmp))
        fields = {"num_beams": str(args.num_beams), "max_new_tokens": str(args.max_new_tokens),
                  "min_new_tokens": str(args.max_new_tokens)}  # every answer the same length: comparable work
        bodies = [multipart(fields, picture) for picture in pictures(args.requests)]
        servers = {"off": Server(run, 1), "on": Server(run, args.batch)}  # both up: measured in turns
        best: dict[tuple[str, int], dict] = {}
        try:
            for server in servers.values():
                server.caption(*bodies[0])  # warm-up
            for round_ in range(args.rounds):
                for clients in args.clients:
                    for label in (("off", "on") if round_ % 2 == 0 else ("on", "off")):
                        row = measure(servers[label], bodies, clients)
                        if (label, clients) not in best or row["seconds"] < best[label, clients]["seconds"]:
                            best[label, clients] = row
        finally:
            for server in servers.values():
                server.stop()
    rows = [{"batching": label, **best[label, clients]} for label in ("off", "on") for clients in args.clients]
    for row in rows:
        print(f"batching {row['batching']:3} clients {row['clients']:2}: {row['requests_per_s']:6.1f} req/s  "
              f"p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  mean batch {row['mean_batch'] or 0:4.1f}")
    reference = rows[0]["captions"]
    assert all(row["captions"] == reference for row in rows), "captions differ between settings"

    print("\n| clients | batching off: req/s | p50 ms | p95 ms | batching on: req/s | p50 ms | p95 ms | mean batch "
          "| speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for clients in args.clients:
        off = next(r for r in rows if r["batching"] == "off" and r["clients"] == clients)
        on = next(r for r in rows if r["batching"] == "on" and r["clients"] == clients)
        print(f"| {clients} | {off['requests_per_s']:.1f} | {off['p50_ms']:.0f} | {off['p95_ms']:.0f} | "
              f"{on['requests_per_s']:.1f} | {on['p50_ms']:.0f} | {on['p95_ms']:.0f} | {on['mean_batch']:.1f} | "
              f"{on['requests_per_s'] / off['requests_per_s']:.2f}x |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load_average": os.getloadavg(), "python": platform.python_version()}
    args.json.write_text(json.dumps({"machine": machine, "settings": vars(args) | {"run": str(args.run),
                                                                                    "json": str(args.json)},
                                     "rows": [{k: v for k, v in r.items() if k != "captions"} for r in rows]},
                                    indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
