"""The JSON API on a tiny trained run: answers equal the Captioner's, and bad input is a 4xx naming it."""

from __future__ import annotations

import io
import json
import socket
import time

import numpy as np
import pytest
from PIL import Image

from pgmm_serve.app import ServeSettings
from pgmm_serve.inputs import Limits


@pytest.fixture
def base(serve):
    return serve(ServeSettings(limits=Limits(max_upload_bytes=200_000, max_image_pixels=4_000_000)))


def test_caption_by_upload_and_by_base64_equals_the_captioner(base, http, engine):
    picture = http.pictures(1)[0]
    expected = engine.captioner.caption([Image.open(io.BytesIO(picture))], num_beams=2)[0]
    by_file = http.post_form(base, "/v1/caption", {"num_beams": "2"}, picture)
    by_json = http.post_json(base, "/v1/caption", {"image": http.b64(picture), "num_beams": 2})
    data_url = http.post_json(base, "/v1/caption", {"image": "data:image/png;base64," + http.b64(picture),
                                                    "num_beams": 2})
    for answer in (by_file, by_json, data_url):
        assert answer.status == 200, answer.body
        assert answer.json() == {"caption": expected, "captions": [expected]}
    several = http.post_json(base, "/v1/caption", {"image": http.b64(picture), "num_beams": 3,
                                                   "num_return_sequences": 3})
    assert several.status == 200 and len(several.json()["captions"]) == 3


def test_streamed_caption_is_server_sent_events_ending_with_the_caption(base, http):
    picture = http.pictures(1, seed=3)[0]
    plain = http.post_json(base, "/v1/caption", {"image": http.b64(picture)}).json()["caption"]
    answer = http.post_form(base, "/v1/caption", {"stream": "true"}, picture)
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = answer.events()
    assert [name for name, _ in events][-1] == "done" and events[-1][1] == {"caption": plain}
    assert "".join(data["text"] for name, data in events if name == "piece").strip() == plain


def test_health_model_and_the_offline_api_reference(base, http, tiny_run):
    health = http.request(base, "GET", "/v1/health")
    assert health.status == 200 and health.json()["status"] == "ok"
    model = http.request(base, "GET", "/v1/model").json()
    assert model["run"] == str(tiny_run) and model["checkpoint"]["step"] == 4
    assert model["checkpoint"]["requested"] == "last" and model["checkpoint"]["path"].endswith("step-000004")
    assert model["components"] == {"vision": "eva_vit_g", "connector": "qformer", "projector": "mlp2x_gelu",
                                   "llm": "tiny_openpangu", "objective": "instruct"}
    assert model["ask"]["available"] and model["ask"]["mode"] == "instruct"
    assert model["limits"]["max_image_pixels"] == 4_000_000
    schema = http.request(base, "GET", "/openapi.json").json()
    assert {"/v1/caption", "/v1/ask", "/v1/health", "/v1/model"} <= set(schema["paths"])
    body = schema["paths"]["/v1/caption"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "max_new_tokens" in body["application/json"]["schema"]["properties"]
    for page in ("/docs", "/"):
        html = http.request(base, "GET", page)
        assert html.status == 200 and html.headers["content-type"].startswith("text/html")
        text = html.body.decode()
        assert "http://" not in text and "https://" not in text  # every asset from this server
        for asset in [part.split('"')[0] for part in text.split('src="')[1:] + text.split('href="')[1:]]:
            if asset.startswith("/static/"):
                fetched = http.request(base, "GET", asset)
                assert fetched.status == 200 and b"https://" not in fetched.body, asset


def test_ask_answers_equal_the_assistant_one_by_one_with_history(base, http, engine):
    picture = http.pictures(1, seed=5)[0]
    image = Image.open(io.BytesIO(picture))
    history = [{"role": "user", "content": "what colour is it?"}, {"role": "assistant", "content": "red"}]
    expected = engine.assistant.ask(image, "where is it?")
    with_history = engine.assistant.ask(image, "where is it?", history=history, max_new_tokens=5)
    by_file = http.post_form(base, "/v1/ask", {"question": "where is it?"}, picture)
    by_json = http.post_json(base, "/v1/ask", {"image": http.b64(picture), "question": "where is it?"})
    assert by_file.status == by_json.status == 200, (by_file.body, by_json.body)
    assert by_file.json() == by_json.json() == {"answer": expected}
    chat = http.post_form(base, "/v1/ask", {"question": "where is it?", "history": json.dumps(history),
                                            "max_new_tokens": "5"}, picture)
    assert chat.status == 200 and chat.json() == {"answer": with_history}


def test_streamed_answer_comes_piece_by_piece(base, http, engine):
    picture = http.pictures(1, seed=6)[0]
    expected = engine.assistant.ask(Image.open(io.BytesIO(picture)), "what shape is it?", max_new_tokens=6,
                                    min_new_tokens=6)
    answer = http.post_json(base, "/v1/ask", {"image": http.b64(picture), "question": "what shape is it?",
                                              "stream": True, "max_new_tokens": 6, "min_new_tokens": 6})
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = answer.events()
    pieces = [data["text"] for name, data in events if name == "piece"]
    assert len(pieces) > 1  # greedy decoding streams token by token
    assert events[-1] == ("done", {"answer": expected}) and "".join(pieces).strip() == expected


def bad_requests(http, picture: bytes) -> list[tuple[str, object, int, str]]:
    """(name, send(base) -> Answer, expected status, what the error must name)."""
    truncated_png = picture[: len(picture) // 2]
    jpeg = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(jpeg, "JPEG")
    truncated_jpeg = jpeg.getvalue()[:300]
    bomb = io.BytesIO()
    Image.new("1", (3000, 3000)).save(bomb, "PNG")  # 9,000,000 pixels in a few kB
    big = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    too_many_bytes = http.png(Image.fromarray(big))  # about 270 kB of noise
    image = http.b64(picture)
    json_raw = lambda body: lambda base: http.request(base, "POST", "/v1/caption", body,
                                                      {"Content-Type": "application/json"})
    return [
        ("not an image", lambda b: http.post_form(b, "/v1/caption", {}, b"GIF? no, just text"), 400, "image"),
        ("truncated png", lambda b: http.post_form(b, "/v1/caption", {}, truncated_png), 400, "image"),
        ("truncated jpeg", lambda b: http.post_json(b, "/v1/caption", {"image": http.b64(truncated_jpeg)}),
         400, "image"),
        ("decompression bomb", lambda b: http.post_form(b, "/v1/caption", {}, bomb.getvalue()), 413, "pixels"),
        ("file over the size limit", lambda b: http.post_form(b, "/v1/caption", {}, too_many_bytes), 413, "bytes"),
        ("empty file", lambda b: http.post_form(b, "/v1/caption", {}, b""), 400, "image"),
        ("unknown field", lambda b: http.post_json(b, "/v1/caption", {"image": image, "beams": 3}), 422, "beams"),
        ("unknown form field", lambda b: http.post_form(b, "/v1/caption", {"colour": "red"}, picture), 422,
         "colour"),
        ("huge max_new_tokens", lambda b: http.post_json(b, "/v1/caption", {"image": image,
                                                                             "max_new_tokens": 10**9}),
         422, "max_new_tokens"),
        ("too many beams", lambda b: http.post_form(b, "/v1/caption", {"num_beams": "500"}, picture), 422,
         "num_beams"),
        ("a string for a number", lambda b: http.post_json(b, "/v1/caption", {"image": image, "num_beams": "5"}),
         422, "num_beams"),
        ("min above max", lambda b: http.post_json(b, "/v1/caption", {"image": image, "min_new_tokens": 20,
                                                                       "max_new_tokens": 5}), 422, "min_new_tokens"),
        ("missing image", lambda b: http.post_json(b, "/v1/caption", {"num_beams": 1}), 422, "image"),
        ("bad base64", lambda b: http.post_json(b, "/v1/caption", {"image": "***not base64***"}), 400, "base64"),
        ("missing question", lambda b: http.post_form(b, "/v1/ask", {}, picture), 422, "question"),
        ("empty question", lambda b: http.post_json(b, "/v1/ask", {"image": image, "question": ""}), 422,
         "question"),
        ("history with a bad role", lambda b: http.post_json(b, "/v1/ask", {
            "image": image, "question": "q", "history": [{"role": "system", "content": "x"}]}), 422, "history"),
        ("history that is not JSON", lambda b: http.post_form(b, "/v1/ask", {"question": "q", "history": "[{"},
                                                              picture), 422, "history"),
        ("several answers asked for", lambda b: http.post_json(b, "/v1/ask", {
            "image": image, "question": "q", "num_return_sequences": 2}), 422, "num_return_sequences"),
        ("not json", json_raw(b"{image: nope"), 400, "JSON"),
        ("a json list", json_raw(b"[1, 2]"), 422, "object"),
        ("too many form fields", lambda b: http.post_form(b, "/v1/caption", {f"f{i}": "1" for i in range(40)},
                                                          picture), 400, "fields"),
        ("no such route", lambda b: http.request(b, "POST", "/v1/captions", b""), 404, "/v1/captions"),
        ("wrong method", lambda b: http.request(b, "GET", "/v1/caption"), 405, "GET"),
        ("plain text body", lambda b: http.request(b, "POST", "/v1/caption", b"hello",
                                                   {"Content-Type": "text/plain"}), 415, "multipart"),
    ]


def test_every_bad_request_is_a_4xx_json_error_naming_the_problem_and_the_server_goes_on(base, http):
    picture = http.pictures(1)[0]
    for name, send, status, named in bad_requests(http, picture):
        answer = send(base)
        assert answer.status == status, (name, answer.status, answer.body[:300])
        error = answer.json()["error"]
        assert named in error["message"] + " ".join(error.get("fields", [])), (name, error)
    assert http.post_form(base, "/v1/caption", {}, picture).status == 200


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(base, http):
    answer = http.request(base, "POST", "/v1/caption", b"", {"Content-Type": "application/json",
                                                             "Content-Length": str(10**9)})
    assert answer.status == 413 and "limit" in answer.json()["error"]["message"]


def test_a_full_queue_answers_503_with_retry_after(serve, http):
    base = serve(ServeSettings(max_batch_size=1, max_wait_ms=0, queue_size=2))
    picture = http.b64(http.pictures(1)[0])
    slow = {"image": picture, "num_beams": 8, "max_new_tokens": 64, "min_new_tokens": 64}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: http.post_json(base, "/v1/caption", slow), range(12)))
    statuses = sorted(a.status for a in answers)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 2, statuses
    refused = next(a for a in answers if a.status == 503)
    assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error"]["code"] == "queue_full"
    assert http.request(base, "GET", "/v1/health").json()["queued"] == 0
    assert http.post_json(base, "/v1/caption", {"image": picture}).status == 200


def test_clients_that_hang_up_free_their_slots_before_reaching_the_model(serve, http):
    base = serve(ServeSettings(max_batch_size=1, max_wait_ms=0, queue_size=8))
    picture = http.b64(http.pictures(1)[0])
    body = (f'{{"image": "{picture}", "num_beams": 8, "max_new_tokens": 64, "min_new_tokens": 64}}').encode()
    port = int(base.rsplit(":", 1)[1])
    sockets = []
    for _ in range(8):  # fill every slot, then hang up
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        sockets.append(sock)
    deadline = time.monotonic() + 10
    while http.request(base, "GET", "/v1/health").json()["queued"] < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    for sock in sockets:
        sock.close()
    deadline = time.monotonic() + 10
    while (health := http.request(base, "GET", "/v1/health").json())["queued"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert health["queued"] == 0
    assert health["requests"] < 8  # the queued ones never reached the model
    assert http.post_json(base, "/v1/caption", {"image": picture}).status == 200
