"""Bounded request bodies: size on every route, nesting depth for JSON.

A pure ASGI middleware reads the body before any route does, up to a limit: uploads
(``POST /v1/images``) may carry ``max_upload_bytes`` of image (as base64 in JSON, or
multipart: 4/3 of it plus framing); every other request ``max_json_bytes``. Over the
limit, whether declared in Content-Length or only streamed, the answer is a 413 in
the one error shape, naming the setting, and nothing more is read. A JSON body
nested deeper than ``max_json_depth`` is a 422 before any parser recurses into it
(Python's ``json`` raised RecursionError at ~10,000 levels: a 500).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_PATH = "/v1/images"
UPLOAD_FRAMING = 64 * 1024  # multipart headers and boundaries
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def upload_body_limit(max_upload_bytes: int) -> int:
    """The body an upload of ``max_upload_bytes`` may need: base64 is 4/3 of it."""
    return max_upload_bytes * 4 // 3 + UPLOAD_FRAMING


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body`` (brackets inside strings
    do not count). Linear, without recursion; garbage gives some number, never an error."""
    stripped = _STRING.sub(b"", body)
    if not stripped:
        return 0
    steps = _OPEN[np.frombuffer(stripped, np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int, max_json_depth: int
    ) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_json_depth = max_json_depth

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["path"].rstrip("/") == UPLOAD_PATH:
            return upload_body_limit(self.max_upload_bytes), "max_upload_bytes"
        return self.max_json_bytes, "max_json_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit, setting)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit, setting)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"")
        if b"json" in content_type and json_depth(body) > self.max_json_depth:
            await _error(
                send, 422, "invalid_request",
                f"JSON nested deeper than {self.max_json_depth} levels (max_json_depth)", "body",
            )  # fmt: skip
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: a disconnect, when it comes

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int, setting: str) -> None:
    await _error(
        send, 413, "payload_too_large", f"request body over {limit} bytes ({setting})", "body"
    )


async def _error(send: Send, status: int, code: str, message: str, field: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "field": field}}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
