"""What FastAPI's generated document leaves out or says wrong, put right in one place.

- One error shape: every 4xx/5xx answer is ``ErrorResponse`` (``{"error": {...}}``);
  FastAPI's own ``HTTPValidationError`` (``detail``) is never sent, so it goes.
- Every status an operation can return is listed: 422 where it takes parameters or a
  body, 413 where it takes a body (``service.limits``), 503 where it needs Redis, and
  500 (an internal error, still in the error shape) everywhere.
- The PNG download is a binary ``image/png`` body.
- A method's parameter defaults are in their descriptions, not ``default``
  (``contract.spec.publish_defaults``: a model's editing defaults replace them).
"""

from __future__ import annotations

from typing import Any

from contract.methods import METHODS
from contract.spec import publish_defaults

_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_DESCRIPTIONS = {
    "401": "no or an unknown API key",
    "404": "no such resource (or not the caller's); a body's reference that does not exist",
    "409": "the resource's state does not allow this; for a job submission, what the "
    "request names exists but does not fit together: an image of another size (under fit "
    "error), an asset of another model or method, a method the model's family cannot run, "
    "a prompt for an unconditional model",
    "413": "the body (or the image) is over a limit",
    "415": "not an image in an allowed format",
    "422": "a parameter, header or body field is invalid; ``field`` names it",
    "429": "a queue is full; retry after ``Retry-After`` seconds",
    "500": "an internal error",
    "503": "the job store (Redis) is unreachable; retry",
}
_NO_REDIS = {"/healthz", "/metrics", "/readyz", "/v1/methods"}


def _error(status: str) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS.get(status, "error"),
        "content": {"application/json": {"schema": dict(_ERROR_REF)}},
    }


def finish(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with the error shape, the status codes and the PNG body as the API has them."""
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            for status in responses:
                if status.startswith(("4", "5")) and path != "/readyz":
                    responses[status] = _error(status)  # readyz's 503 has its own body
            takes_input = bool(op.get("parameters")) or "requestBody" in op
            wanted = ["500"]
            if takes_input:
                wanted.append("422")
            if "requestBody" in op:
                wanted.append("413")
            if path not in _NO_REDIS:
                wanted.append("503")
            for status in wanted:
                responses.setdefault(status, _error(status))
            if method == "get" and path.endswith("/outputs/{n}"):
                responses["200"]["content"] = {
                    "image/png": {"schema": {"type": "string", "format": "binary"}}
                }
            op["responses"] = dict(sorted(responses.items()))
    schemas = spec.get("components", {}).get("schemas", {})
    for params in {s.params.__name__ for s in METHODS.values()} & set(schemas):
        publish_defaults(schemas[params])  # defaults as the API applies them
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec
