"""One tiny trained run per test session, servers on free loopback ports, and a plain HTTP client.

The run (instruction-tuned, so that it both captions and answers) is trained once (about 15 s on
2 idle cores) and loaded once; each test starts its own server
(uvicorn in a thread of this process, on a port the OS picks) with the settings it needs, so a
server's queue and counters belong to one test. The client is the standard library's
``http.client``: what a test sends is exactly what is on the wire.
"""

from __future__ import annotations

import base64
import http.client as http_client
import io
import json
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pgmm_core.testing import run_train, tiny_config


# an instruction-tuned tiny run: it captions (the Captioner) and answers questions (the Assistant)
CHAT_DATA = {"train": [{"type": "synthetic_shapes_chat", "num_samples": 32, "seed": 0}],
             "val": [{"type": "synthetic_shapes_chat", "num_samples": 4, "seed": 0}], "batch_size": 8,
             "num_workers": 0}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-run")
    config = tiny_config(tmp / "run", objective={"type": "instruct", "generation": {
                             "num_beams": 1, "max_new_tokens": 8, "min_new_tokens": 1}},
                         data=CHAT_DATA, train={"max_steps": 4, "eval_every": 4})
    result = run_train(config, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


@pytest.fixture(scope="session")
def engine(tiny_run):
    from pgmm_serve.engine import Engine

    return Engine.from_run(tiny_run, checkpoint="last")


@pytest.fixture
def serve(engine):
    """``serve(settings=None) -> base URL``: a server for this test, stopped when it ends."""
    from pgmm_serve.app import ServeSettings

    with _servers() as start:
        yield lambda settings=None: start(engine, settings or ServeSettings())


@contextmanager
def _servers():
    import uvicorn

    from pgmm_serve.app import create_app

    running: list[tuple[Any, threading.Thread]] = []

    def start(engine, settings) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app(engine, settings), log_config=None, access_log=False,
                                               timeout_graceful_shutdown=5))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        running.append((server, thread))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    try:
        yield start
    finally:
        for server, thread in running:
            server.should_exit = True
            thread.join(timeout=30)


# --- a client ------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[tuple[str, dict]]:
        """Server-sent events as (name, data) pairs."""
        found = []
        for block in self.body.decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in lines:
                found.append((lines["event"], json.loads(lines["data"])))
        return found


def request(base: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            timeout: float = 60) -> Answer:
    host, port = base.removeprefix("http://").split(":")
    connection = http_client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def post_json(base: str, path: str, data: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return request(base, "POST", path, json.dumps(data).encode(), {"Content-Type": "application/json",
                                                                    **(headers or {})})


def post_form(base: str, path: str, fields: dict[str, str], image: bytes | None = None,
              headers: dict[str, str] | None = None) -> Answer:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    if image is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image.png"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + image + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return request(base, "POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}",
                                              **(headers or {})})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pictures(count: int, seed: int = 0) -> list[bytes]:
    """``count`` different small PNG pictures (noise over a coloured ground, varied sizes)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        ground = rng.integers(0, 256, 3)
        pixels = np.clip(ground + rng.normal(0, 40, (40 + 3 * i, 56, 3)), 0, 255).astype(np.uint8)
        out.append(png(Image.fromarray(pixels)))
    return out


@pytest.fixture(scope="session")
def http():
    """The client above, as one object (test modules cannot import conftest under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(request=request, post_json=post_json, post_form=post_form, b64=b64, png=png,
                           pictures=pictures)
