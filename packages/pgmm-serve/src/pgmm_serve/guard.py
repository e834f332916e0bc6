"""The ASGI layer in front of every route: one log line per request, the API key, the body-size cap.

It is plain ASGI (not Starlette's ``BaseHTTPMiddleware``) so that the routes receive the client's own
``receive`` channel: that is how a handler notices a client that went away and frees its slot.

API key: when one is set, every request must carry it — as ``Authorization: Bearer KEY``, as
``X-API-Key: KEY``, or as the ``pgmm_api_key`` cookie, which a browser gets by opening
``/?api_key=KEY`` once (the answer sets the cookie and redirects to ``/``, so the key leaves the
address bar and the page's own requests carry it).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

logger = logging.getLogger("pgmm_serve.requests")

COOKIE = "pgmm_api_key"


class BodyTooLarge(Exception):
    """The request body went over the cap while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than this server's limit of {limit:,} bytes")
        self.limit = limit


class Guard:
    """Wraps the application; ``max_body`` caps every request body (uploads included)."""

    def __init__(self, app: Any, *, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": None, "bytes": 0}

        async def send_logged(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            refused = self._refusal(scope)
            if refused is not None:
                await _send_json(send_logged, *refused)
            else:
                await self.app(scope, self._capped(receive), send_logged)
        finally:
            client = scope.get("client") or ("-", 0)
            status = seen["status"] or 499  # no answer started: the client went away first
            logger.info("%s %s %s %d %dB %.1fms", client[0], scope["method"], scope["path"], status, seen["bytes"],
                        (time.perf_counter() - started) * 1000)

    def _refusal(self, scope: dict) -> tuple | None:
        """``(status, body, headers)`` for a request refused before the application sees it."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return 413, _error("too_large", f"request body of {int(length):,} bytes, more than this server's "
                               f"limit of {self.max_body:,}"), {}
        if self.api_key is None:
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["path"] == "/" and _same(query.get("api_key", [""])[0], self.api_key):
            cookie = f"{COOKIE}={self.api_key}; HttpOnly; SameSite=Strict; Path=/"
            return 303, b"", {"location": "/", "set-cookie": cookie}
        offered = headers.get("x-api-key") or _bearer(headers.get("authorization", "")) or _cookie(headers)
        if offered is not None and _same(offered, self.api_key):
            return None
        return 401, _error("unauthorized", "this server needs its API key: 'Authorization: Bearer KEY' or "
                           "'X-API-Key: KEY' (in a browser, open /?api_key=KEY once)"), {"www-authenticate": "Bearer"}

    def _capped(self, receive: Any) -> Any:
        total = 0

        async def capped() -> dict:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return capped


def _same(offered: str, key: str) -> bool:
    return hmac.compare_digest(offered.encode(), key.encode())


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _cookie(headers: dict[str, str]) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is no key
        return None
    return jar[COOKIE].value if COOKIE in jar else None


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def _send_json(send: Any, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    if body:
        raw += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    else:
        raw.append((b"content-length", b"0"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
