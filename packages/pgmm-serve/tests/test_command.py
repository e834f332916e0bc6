"""``python -m pgmm_core serve`` as users run it: the installed command, --api-key, one log line per request."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from pgmm_serve.command import _is_loopback


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def keyed_server(tiny_run, http):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pgmm_core", "serve", "--run", str(tiny_run), "--checkpoint",
                                "last", "--port", str(port), "--api-key", "s3cret", "--no-ask"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the server did not start"
        try:
            http.request(base, "GET", "/v1/health", timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    yield base, process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_an_api_key_is_required_on_every_request(keyed_server, http):
    base, process = keyed_server
    picture = http.pictures(1)[0]
    refused = [http.request(base, "GET", "/v1/health"),
               http.request(base, "GET", "/v1/health", headers={"Authorization": "Bearer wrong"}),
               http.request(base, "GET", "/", headers={"X-API-Key": "s3cre"}),
               http.request(base, "GET", "/static/app.js"),
               http.request(base, "GET", "/openapi.json"),
               http.post_form(base, "/v1/caption", {}, picture)]
    for answer in refused:
        assert answer.status == 401 and answer.json()["error"]["code"] == "unauthorized", answer.body
        assert answer.headers["www-authenticate"] == "Bearer"
    assert http.request(base, "GET", "/v1/health", headers={"Authorization": "Bearer s3cret"}).status == 200
    assert http.post_form(base, "/v1/caption", {}, picture, headers={"X-API-Key": "s3cret"}).json()["caption"]

    # a browser: /?api_key=KEY once sets a cookie that the page's own requests carry
    entry = http.request(base, "GET", "/?api_key=s3cret")
    assert entry.status == 303 and entry.headers["location"] == "/"
    cookie = entry.headers["set-cookie"].split(";")[0]
    assert cookie == "pgmm_api_key=s3cret" and "HttpOnly" in entry.headers["set-cookie"]
    for path in ("/", "/static/app.js", "/v1/model"):
        assert http.request(base, "GET", path, headers={"Cookie": cookie}).status == 200, path
    assert http.request(base, "GET", "/?api_key=wrong").status == 401

    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in out.splitlines() if line.startswith("127.0.0.1 ")]
    assert lines[0].startswith("127.0.0.1 GET /v1/health")  # the fixture's wait for the server
    assert len(lines) == 1 + len(refused) + 2 + 1 + 3 + 1  # one line per request
    assert sum(" 401 " in line for line in lines) == 1 + len(refused) + 1
    assert any(line.startswith("127.0.0.1 POST /v1/caption 200 ") for line in lines)


def test_only_loopback_addresses_count_as_local():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.5") and not _is_loopback("example.org")


def test_the_plugin_registers_serve_and_listing_commands_imports_no_torch_nor_fastapi():
    code = ("import sys; from pgmm_core.plugins import PluginHost; host = PluginHost(); "
            "command = host.commands().commands['serve']; "
            "import argparse; parser = argparse.ArgumentParser(); "
            "__import__('pgmm_serve.command', fromlist=['configure']).configure(parser); "
            "print(command.provider.distribution, 'torch' in sys.modules, 'fastapi' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["pgmm-serve", "False", "False"]
