"""Edit submissions: validated against the method's schema, then queued for a worker."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Response
from pydantic import BaseModel, ConfigDict, Field

from contract.jobs import JobKind, JobPayload
from contract.keys import IDEMPOTENCY_KEY
from contract.methods import METHODS
from contract.models import ModelInfo
from contract.params import MethodParams
from contract.spec import MethodSpec, Refused, resolve_params
from service.deps import BlobsDep, OwnerDep, QueueDep, RedisDep, SettingsDep
from service.errors import ApiError, ErrorResponse
from service.job_requests import request_parts, request_union
from service.uploads import upright_size
from store.assets import AssetIndex
from store.blobs import is_content_id
from store.ownership import owns_image


class JobCreate(BaseModel):
    """An edit (or fit) request: a method on a model, its input images and parameters."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200, description="a model from GET /v1/models")
    method: str = Field(min_length=1, max_length=100, description="a method from GET /v1/methods")
    inputs: dict[str, str] = Field(
        default_factory=dict, description="image role -> content id from POST /v1/images"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the method's parameters")
    seed: int = Field(0, ge=0, le=2**53 - 1, description="seeds every random draw of the job")


class JobLinks(BaseModel):
    self: str
    cancel: str


class JobAccepted(BaseModel):
    id: str
    status: str
    links: JobLinks


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 404, 409, 413, 422, 429, 503)
}


def _check_references(
    spec: Any,
    body: JobCreate,
    params: dict[str, Any],
    owner: str | None,
    ctx: Any,
    image_size: list[int] | None = None,
) -> None:
    """Every image and asset the request names exists and is the caller's to use (404
    otherwise, as for an id that does not exist); an asset is of the right method and
    model (409); under ``fit: error`` every image is the model's ``image_size`` (the
    [height, width] its workers publish), else a 409 now rather than a failure later.

    The statuses: 422, the request is malformed on its own (the document's schemas
    say so); 404, it names something that does not exist; 409, what it names exists
    but does not fit together (a model, an image, an asset)."""
    references = [(f"inputs.{role}", blob_id) for role, blob_id in body.inputs.items()]
    for name in spec.image_list_params:
        references += [(f"params.{name}[{i}]", b) for i, b in enumerate(params.get(name, []))]
    scope = None if ctx.settings.share_uploads else owner  # the key whose uploads count
    for where, blob_id in references:
        if (
            not is_content_id(blob_id)
            or not ctx.blobs.exists(blob_id)
            or (scope is not None and not owns_image(ctx.redis, blob_id, scope))
        ):
            raise ApiError(404, "not_found", f"{where}: no uploaded image {blob_id!r}", where)
    if image_size and params.get("fit", "error") == "error":
        height, width = image_size
        for where, blob_id in references:
            if where.removeprefix("inputs.") in spec.mask_inputs:
                continue  # a mask of any size is scaled to h's cells
            size = upright_size(ctx.blobs.get(blob_id))
            if size is not None and size != (width, height):
                raise ApiError(
                    409,
                    "incompatible",
                    f"{where}: model {body.model} takes {width}x{height} images, got "
                    f"{size[0]}x{size[1]}; resize it or pass fit=resize or fit=crop",
                    where,
                )
    for name, fit_method in spec.asset_params.items():
        value = params.get(name)
        ids = value if isinstance(value, list) else [] if value is None else [value]
        for i, asset_id in enumerate(ids):
            where = f"params.{name}" + (f"[{i}]" if isinstance(value, list) else "")
            record = AssetIndex(ctx.redis).get(asset_id)
            if record is None or record.get("owner") not in (None, owner):
                raise ApiError(404, "not_found", f"{where}: no asset {asset_id!r}", where)
            if record.get("method") != fit_method:
                raise ApiError(
                    409,
                    "incompatible",
                    f"{where}: asset {asset_id!r} is a {record.get('method')} asset; "
                    f"{body.method} needs a {fit_method} asset",
                    where,
                )
            if record.get("model") != body.model:
                raise ApiError(
                    409,
                    "incompatible",
                    f"{where}: asset {asset_id!r} was fitted on model {record.get('model')}, "
                    f"not {body.model}",
                    where,
                )
    for _, blob_id in references:
        ctx.blobs.touch(blob_id)  # named now: retention keeps it at least gc_min_age_s from here


def _params_for(spec: MethodSpec, body: JobCreate, model: ModelInfo) -> MethodParams:
    """The parameters the worker will run (``contract.spec.resolve_params``), or the
    refusal as the API's 422 (malformed) or 409 (``incompatible`` with this model)."""
    try:
        return resolve_params(spec, body.params, model.editing_defaults,
                              conditional=model.conditional, model=body.model,
                              family=model.family, inputs=frozenset(body.inputs))  # fmt: skip
    except Refused as exc:
        status, code = (409, "incompatible") if exc.incompatible else (422, "invalid_request")
        raise ApiError(status, code, exc.message, exc.where) from exc


def _validate(body: JobCreate, kind: JobKind, ctx: Any, owner: str | None) -> dict[str, Any]:
    queue = ctx.queue
    spec = METHODS.get(body.method)
    if spec is None or spec.kind != kind:
        known = ", ".join(n for n, s in METHODS.items() if s.kind == kind) or "none"
        raise ApiError(
            422,
            "invalid_request",
            f"unknown {kind.value} method {body.method!r}; known: {known}",
            "method",
        )
    models = queue.model_descriptions(fresh_s=float("inf"))
    if body.model not in models:  # a reference to a model no worker holds, as for images
        known = ", ".join(sorted(models)) or "none (no worker has started)"
        raise ApiError(404, "not_found", f"unknown model {body.model!r}; known: {known}", "model")
    model = models[body.model].info
    family = model.family
    if family not in spec.families:
        raise ApiError(
            409,
            "incompatible",
            f"{body.method} needs a {' or '.join(spec.families)} model; {body.model} is {family}",
            "model",
        )
    merged = _params_for(spec, body, model)
    params = merged.model_dump(mode="json")
    roles = (*spec.inputs, *spec.optional_inputs)
    for role in body.inputs:
        if role not in roles:
            raise ApiError(
                422,
                "invalid_request",
                f"{body.method} takes no input {role!r}; inputs: {', '.join(roles) or 'none'}",
                f"inputs.{role}",
            )
    missing = spec.missing_input(merged, set(body.inputs))
    if missing is not None:
        raise ApiError(422, "invalid_request", f"inputs.{missing}: missing", f"inputs.{missing}")
    _check_references(spec, body, params, owner, ctx, model.image_size)
    return params


def submit_job(
    body: JobCreate,
    kind: JobKind,
    response: Response,
    *,
    settings: Any,
    queue: Any,
    blobs: Any,
    redis: Any,
    owner: str | None,
    idempotency_key: str | None,
) -> JobAccepted:
    """Validate, take a place, enqueue: the job is queued once, whatever is retried."""
    digest = hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()
    idem_key = (
        IDEMPOTENCY_KEY.format(owner=owner or "-", key=idempotency_key) if idempotency_key else None
    )
    replayed = _replayed(redis, idem_key, digest)
    if replayed is not None:
        response.headers["Idempotent-Replayed"] = "true"
        return replayed
    params = _validate(body, kind, _Refs(settings, queue, blobs, redis), owner)
    depth = queue.depth()
    if depth >= settings.queue_depth_cap:
        raise ApiError(
            429,
            "queue_full",
            f"{depth} jobs are queued; try again later",
            headers={"Retry-After": "5"},
        )
    job_id = queue.new_id()
    capped = owner if settings.owner_queue_cap > 0 else None  # the key whose place we take
    if capped is not None:
        _take_place(queue, capped, job_id, settings.owner_queue_cap)
    payload = JobPayload(
        id=job_id, kind=kind, model=body.model, method=body.method, params=params,
        inputs=body.inputs, seed=body.seed, owner=owner, max_attempts=settings.job_attempts,
    )  # fmt: skip
    accepted = JobAccepted(
        id=payload.id,
        status="queued",
        links=JobLinks(self=f"/v1/jobs/{payload.id}", cancel=f"/v1/jobs/{payload.id}/cancel"),
    )
    try:
        if idem_key:
            record = json.dumps({"digest": digest, "response": accepted.model_dump()})
            if not redis.set(idem_key, record, nx=True, ex=settings.idempotency_ttl_s):
                # a concurrent request with the same key won the race: answer as it did
                if capped is not None:
                    queue.release_owner_place(capped, job_id)
                return submit_job(
                    body, kind, response, settings=settings, queue=queue, blobs=blobs,
                    redis=redis, owner=owner, idempotency_key=idempotency_key,
                )  # fmt: skip
        queue.submit(payload)
    except Exception:
        # not enqueued: a replay must not answer with this id, and the place is free
        # again (best effort: with Redis away, the key's record and the place expire)
        with contextlib.suppress(Exception):
            if idem_key:
                redis.delete(idem_key)
            if capped is not None:
                queue.release_owner_place(capped, job_id)
        raise
    response.headers["Location"] = accepted.links.self
    return accepted


def _replayed(redis: Any, idem_key: str | None, digest: str) -> JobAccepted | None:
    """The first answer to this Idempotency-Key, if it was used with this same body."""
    seen = redis.get(idem_key) if idem_key else None
    if seen is None:
        return None
    record = json.loads(seen)
    if record["digest"] != digest:
        raise ApiError(
            409,
            "idempotency_conflict",
            "this Idempotency-Key was used with a different request body",
            "Idempotency-Key",
        )
    return JobAccepted.model_validate(record["response"])


def _take_place(queue: Any, owner: str, job_id: str, cap: int) -> None:
    """A place among the key's queued or running jobs, or a 429 when all are taken."""
    taken, held = queue.reserve_owner_place(owner, job_id, cap)
    if not taken:
        raise ApiError(
            429,
            "owner_queue_full",
            f"this API key has {held} jobs queued or running (the cap is {cap}); "
            "wait for one to end",
            headers={"Retry-After": "5"},
        )


@dataclass
class _Refs:
    settings: Any
    queue: Any
    blobs: Any
    redis: Any


@dataclass
class Submission:
    """What every job submission needs, gathered once for both routes."""

    settings: SettingsDep
    queue: QueueDep
    blobs: BlobsDep
    redis: RedisDep
    owner: OwnerDep
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None

    def submit(self, body: JobCreate, kind: JobKind, response: Response) -> JobAccepted:
        return submit_job(
            body, kind, response, settings=self.settings, queue=self.queue, blobs=self.blobs,
            redis=self.redis, owner=self.owner, idempotency_key=self.idempotency_key,
        )  # fmt: skip


SubmissionDep = Annotated[Submission, Depends()]


def build_router() -> APIRouter:
    """The submit routes, their bodies the union of the methods registered now."""
    router = APIRouter(prefix="/v1", tags=["edits"])
    edit_request, fit_request = request_union(JobKind.EDIT), request_union(JobKind.FIT)

    def create_edit(
        body: BaseModel,
        response: Response,
        submission: SubmissionDep,
    ) -> JobAccepted:
        """Queue an edit; poll the returned job link for progress and outputs.

        The body is one method's request (``method`` picks which): its ``inputs``, its
        ``params``, with the model's measured editing defaults for what it leaves out."""
        return submission.submit(JobCreate(**request_parts(body)), JobKind.EDIT, response)

    def create_fit(
        body: BaseModel,
        response: Response,
        submission: SubmissionDep,
    ) -> JobAccepted:
        """Queue a fit; its job's result names the asset it made."""
        return submission.submit(JobCreate(**request_parts(body)), JobKind.FIT, response)

    # the bodies' types exist only now (this module's annotations are strings, which
    # FastAPI would resolve in the module's namespace)
    create_edit.__annotations__["body"] = Annotated[edit_request, Body()]
    create_fit.__annotations__["body"] = Annotated[fit_request, Body()]
    for path, endpoint in (("/edits", create_edit), ("/fits", create_fit)):
        router.add_api_route(path, endpoint, methods=["POST"], status_code=202,
                             response_model=JobAccepted, responses=_ERRORS)  # fmt: skip
    return router
