"""Under load on loopback: 64 requests from 16 concurrent clients, all answered, equal to the same
requests one by one, batched together, while 16 bad requests mixed in all get a 4xx."""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

from pgmm_serve.app import ServeSettings
from pgmm_serve.inputs import Limits

# four kinds of request, each its own batches: captions with different prompts and settings, and questions
KINDS = [("caption", {}), ("caption", {"num_beams": 2}), ("caption", {"prompt": "a photo of"}),
         ("ask", {"question": "what colour is the shape?", "max_new_tokens": 12, "min_new_tokens": 12})]


def test_64_requests_from_16_clients_equal_one_by_one_and_16_bad_ones_get_4xx(serve, http, caplog):
    caplog.set_level(logging.INFO, logger="pgmm_serve.requests")
    base = serve(ServeSettings(max_batch_size=8, max_wait_ms=10, queue_size=128,
                               limits=Limits(max_upload_bytes=200_000, max_image_pixels=4_000_000)))
    pictures = http.pictures(16, seed=1)

    def good(i: int):
        route, options = KINDS[i % 4]
        picture = pictures[i // 4]
        if i % 2:
            return http.post_json(base, f"/v1/{route}", {"image": http.b64(picture), **options})
        return http.post_form(base, f"/v1/{route}", {k: str(v) for k, v in options.items()}, picture)

    def text(answer) -> str:
        body = answer.json()
        return body.get("caption", body.get("answer"))

    one_by_one = [good(i) for i in range(64)]
    assert all(a.status == 200 for a in one_by_one)
    expected = [text(a) for a in one_by_one]
    by_kind = [{expected[i] for i in range(k, 64, 4)} for k in range(4)]
    assert all(not (a & b) for j, a in enumerate(by_kind) for b in by_kind[j + 1:])  # a mix-up would show
    before = http.request(base, "GET", "/v1/health").json()
    assert before["largest_batch"] == 1

    bad = _bad_requests(http, pictures[0])
    work = [("good", i) for i in range(64)] + [("bad", i) for i in range(16)]
    random.Random(0).shuffle(work)
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as clients:
        answers = list(clients.map(lambda job: good(job[1]) if job[0] == "good" else bad[job[1]](base), work))
    elapsed = time.perf_counter() - started
    assert elapsed < 60, f"80 requests took {elapsed:.1f} s"

    got = {job[1]: answer for job, answer in zip(work, answers) if job[0] == "good"}
    assert sorted(got) == list(range(64))  # none lost
    assert [got[i].status for i in range(64)] == [200] * 64
    assert [text(got[i]) for i in range(64)] == expected
    refused = [answer for job, answer in zip(work, answers) if job[0] == "bad"]
    assert all(400 <= a.status < 500 and a.json()["error"]["message"] for a in refused), \
        [(a.status, a.body[:100]) for a in refused]

    after = http.request(base, "GET", "/v1/health").json()
    assert after["requests"] - before["requests"] == 64 and after["queued"] == 0
    assert after["largest_batch"] > 1 and after["batches"] - before["batches"] < 64  # batched together

    def request_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "pgmm_serve.requests"]

    expected_lines = 64 + 1 + 80 + 1  # one line per request: one by one, health, mixed, health
    deadline = time.monotonic() + 10  # a request's line is written once its answer has gone out
    while len(request_lines()) < expected_lines and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = request_lines()
    assert len(lines) == expected_lines
    assert sum(" POST /v1/caption 200 " in line for line in lines) == 96
    assert sum(" POST /v1/ask 200 " in line for line in lines) == 32


def _bad_requests(http, picture: bytes):
    image = http.b64(picture)
    caption = "/v1/caption"
    return [
        lambda b: http.post_form(b, caption, {}, b"this is not an image"),
        lambda b: http.post_form(b, caption, {}, picture[:200]),
        lambda b: http.post_json(b, caption, {"image": image, "max_new_tokens": 100000}),
        lambda b: http.post_json(b, caption, {"image": image, "temperatur": 0.5}),
        lambda b: http.post_form(b, "/v1/ask", {}, picture),
        lambda b: http.post_json(b, caption, {}),
        lambda b: http.post_json(b, caption, {"image": "%%%"}),
        lambda b: http.post_json(b, caption, {"image": image, "num_beams": 0}),
        lambda b: http.post_json(b, caption, {"image": image, "top_p": 7}),
        lambda b: http.post_form(b, caption, {"do_sample": "maybe"}, picture),
        lambda b: http.post_json(b, caption, {"image": image, "num_return_sequences": 99}),
        lambda b: http.request(b, "POST", caption, b"{", {"Content-Type": "application/json"}),
        lambda b: http.request(b, "POST", caption, b"x", {"Content-Type": "text/plain"}),
        lambda b: http.request(b, "GET", caption),
        lambda b: http.request(b, "POST", "/v1/nothing", b"{}", {"Content-Type": "application/json"}),
        lambda b: http.post_json(b, caption, {"image": image, "prompt": "x" * 5000}),
    ]
