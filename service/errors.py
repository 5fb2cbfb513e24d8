"""One JSON error shape everywhere: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from contract.methods import METHODS
from contract.spec import blamed_field

log = logging.getLogger("editserve.api")


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer has this body."""

    error: ErrorBody


class ApiError(Exception):
    """Raised by routes; turned into the error shape with its status and headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers


def error_json(
    status: int, code: str, message: str, field: str | None = None, **kw: Any
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, field=field))
    return JSONResponse(status_code=status, content=body.model_dump(), **kw)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts[:1] == ["body"] and len(parts) > 1 and parts[1] in METHODS:
        del parts[1]  # the request union's tag (the method): the body's own fields follow
    parts = [p for p in parts if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_json(exc.status, exc.code, exc.message, exc.field, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":  # the body is not JSON at all
            reason = (first.get("ctx") or {}).get("error", "")
            message = f"body: not valid JSON ({reason})" if reason else "body: not valid JSON"
            return error_json(422, "invalid_request", message, "body")
        if first.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            tag = (first.get("ctx") or {}).get("tag")
            expected = (first.get("ctx") or {}).get("expected_tags", "")
            what = f"unknown method {tag!r}" if tag is not None else "missing"
            return error_json(
                422, "invalid_request", f"method: {what}; known: {expected}", "method"
            )
        field = _field_path(first.get("loc", ()))
        blamed, msg = blamed_field(str(first.get("msg", "invalid")))
        if first.get("type") == "value_error" and blamed:  # a cross-field rule's field
            field = f"{field}.{blamed}" if field != "body" else blamed
        return error_json(422, "invalid_request", f"{field}: {msg}", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8 JSON)
            return error_json(422, "invalid_request", f"body: {exc.detail}", "body")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_json(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _store_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis unreachable: %s", exc)
        return error_json(
            503,
            "unavailable",
            "the job store (Redis) is unreachable; retry later",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_json(500, "internal", f"internal error ({type(exc).__name__})")
