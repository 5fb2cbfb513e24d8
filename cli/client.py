"""A small HTTP client of the API, for the CLI (and for anyone's scripts)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


class ApiFailure(Exception):
    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {error.get('message', body)}")
        self.status = status
        self.body = body


def parse_value(text: str) -> Any:
    """``k=v`` values: JSON when they parse (numbers, booleans, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def _json(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiFailure(response.status_code, body)
        return body

    def models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(self.http.get("/v1/models"))
        return result

    def methods(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(self.http.get("/v1/methods"))
        return result

    def upload(self, path: Path) -> str:
        with path.open("rb") as fh:
            body = self._json(self.http.post("/v1/images", files={"file": (path.name, fh)}))
        return str(body["id"])

    def submit(
        self, body: dict[str, Any], idempotency_key: str | None = None, *, fit: bool = False
    ) -> dict[str, Any]:
        """POST an edit (or, with ``fit``, a fit); the accepted job's id and links."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        path = "/v1/fits" if fit else "/v1/edits"
        result: dict[str, Any] = self._json(self.http.post(path, json=body, headers=headers))
        return result

    def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        """A job's view; with ``wait`` the server answers once the job ends (or after wait s)."""
        params = {"wait": wait} if wait else {}
        response = self.http.get(f"/v1/jobs/{job_id}", params=params, timeout=wait + 30)
        result: dict[str, Any] = self._json(response)
        return result

    def output(self, job_id: str, n: int) -> bytes:
        response = self.http.get(f"/v1/jobs/{job_id}/outputs/{n}")
        if response.status_code >= 400:
            self._json(response)
        return response.content

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.2,
        timeout_s: float = 3600,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id, wait=poll_s)
            if on_update is not None:
                on_update(job)
            if job["status"] in ("succeeded", "failed", "canceled"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")
