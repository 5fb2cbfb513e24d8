"""HEAD, OPTIONS and ``Allow`` as HTTP says, on every path.

FastAPI registers one route per method, and Starlette answers a 405 with the
methods of the first route whose path matched: ``OPTIONS /v1/assets/{id}`` said
``Allow: GET`` although the path also serves DELETE. This pure ASGI middleware
collects the methods of every route whose path matches:

- ``OPTIONS``: 204 with ``Allow`` (those methods, HEAD where GET is, and OPTIONS);
- ``HEAD``: the GET route's answer without its body (status and headers kept);
- any 405 gets that same ``Allow``;
- a path no route matches is left to the router (its 404).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Match

from service.limits import ASGIApp, Message, Receive, Scope, Send


class MethodsMiddleware:
    def __init__(self, app: ASGIApp, routes: Any) -> None:
        self.app = app
        self.routes = routes  # the router's list; read per request (routes added later)

    def allowed(self, scope: Scope) -> set[str]:
        methods: set[str] = set()
        probe = {**scope, "method": "GET"}
        for route in _leaves(self.routes):
            # PARTIAL: the path matched and the method did not (a DELETE-only route)
            match, _ = route.matches(probe)
            route_methods = getattr(route, "methods", None)
            if match != Match.NONE and route_methods:
                methods |= set(route_methods)
        if "GET" in methods:
            methods.add("HEAD")
        return methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed = self.allowed(scope)
        if not allowed:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(allowed | {"OPTIONS"}))
        method = scope["method"]
        if method == "OPTIONS":
            await send({"type": "http.response.start", "status": 204,
                        "headers": [(b"allow", allow.encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
            return
        if method == "HEAD" and "GET" in allowed:
            await self.app({**scope, "method": "GET"}, receive, _without_body(send))
            return

        async def with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allow.encode())]}
            await send(message)

        await self.app(scope, receive, with_allow)


def _leaves(routes: Any) -> list[Any]:
    """The method routes, also inside included routers (FastAPI wraps each one)."""
    out: list[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out.extend(_leaves(inner.routes) if inner is not None else [route])
    return out


def _without_body(send: Send) -> Send:
    """The response's start as it is, then one empty body message."""
    ended = False

    async def send_head(message: Message) -> None:
        nonlocal ended
        if message["type"] == "http.response.body":
            if ended:
                return
            ended = True
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head
