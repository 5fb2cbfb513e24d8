"""What a method's worker handler is, and what it gets and gives.

A handler is typed to its method's parameter class ``P``. It runs a ``Batch[P]``:
the prepared jobs, and ``shared``, the parameters every job of the batch has equal
(``batch_fields``). Reading a field that is not a batch field from ``shared`` raises
``BatchFieldError``, so a handler cannot quietly apply the first job's value of a
per-job field to the whole batch; per-job values are read from ``job.params``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import torch
from PIL import Image

from contract.jobs import ErrorCode, JobPayload
from contract.params import MethodParams
from contract.spec import MethodSpec

if TYPE_CHECKING:
    from store.blobs import BlobStore
    from worker.engine import Denoiser
    from worker.engine.classifier import AttributeClassifier
    from worker.engine.methods.mixing import Scorer, VggPerceptual
    from worker.inversion_cache import InversionCache

P = TypeVar("P", bound=MethodParams)


class AssetRecords(Protocol):
    """The asset index as handlers read it (``store.assets.AssetIndex``; a dict in tests)."""

    def get(self, asset_id: str) -> dict[str, Any] | None: ...


class ProgressFn(Protocol):
    """``progress(step, total)``, or with the phase a multi-phase fit is in (the job view
    shows it, with the phase's time left). Each call is a step boundary, where a fit
    may yield to queued edits (``worker.yielding``)."""

    def __call__(self, step: int, total: int, phase: str | None = None) -> None: ...


def phase(progress: ProgressFn, name: str) -> Callable[[int, int], None]:
    """An engine function's ``progress(i, n)``, reported as phase ``name``."""
    return lambda i, n: progress(i, n, name)


def chunk_tick(
    progress: Callable[[int, int], None], before: int, total: int
) -> Callable[[int, int], None]:
    """Step i of a chunk, reported as step ``before + i`` of ``total``."""
    return lambda i, _n: progress(before + i, total)


class JobFailed(Exception):
    """A job that cannot succeed; carries the public error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def refused(message: str) -> JobFailed:
    """The request cannot succeed as it is (``invalid_input``); the message names the field."""
    return JobFailed(ErrorCode.INVALID_INPUT, message)


@dataclass
class PreparedJob(Generic[P]):
    payload: JobPayload
    params: P  # validated against the method's parameter class
    images: dict[str, torch.Tensor]  # role -> (1, C, H, W) in [-1, 1]


class BatchFieldError(AttributeError):
    """A handler read a per-job field from the batch's shared parameters (a bug)."""


class _Shared:
    """The first job's parameters, restricted to the fields the batch shares."""

    def __init__(self, params: MethodParams, fields: frozenset[str]) -> None:
        self._params, self._fields = params, fields

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in self._fields:
            return getattr(self._params, name)
        raise BatchFieldError(
            f"{type(self._params).__name__}.{name} is not a batch field; read it per job "
            "(job.params) or add it to the handler's batch_fields"
        )


@dataclass
class Batch(Generic[P]):
    """Prepared jobs of one method that share ``fields`` (see the module docstring)."""

    jobs: list[PreparedJob[P]]
    shared: P

    @classmethod
    def of(cls, jobs: list[PreparedJob[P]], fields: tuple[str, ...] | None) -> Batch[P]:
        """``fields`` None: every field is shared (a batch of one, as fits run)."""
        first = jobs[0].params
        if fields is None:
            return cls(jobs, first)
        return cls(jobs, cast(P, _Shared(first, frozenset(fields))))

    def stack(self, role: str) -> torch.Tensor:
        """Every job's image of ``role``, one batch tensor."""
        return torch.cat([job.images[role] for job in self.jobs])

    def generators(self) -> list[torch.Generator]:
        """One generator per job, seeded with the job's seed."""
        return [torch.Generator().manual_seed(job.payload.seed) for job in self.jobs]


@dataclass
class AssetOutput:
    """A fit's product: the asset's bytes (its codec's safetensors) and its record."""

    name: str
    data: bytes
    params: dict[str, Any]
    metrics: dict[str, Any]

    @cached_property
    def _stored(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        from worker.engine.assets import unpack

        return unpack(self.data, self.name)

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors, read back once (for reports and tests; edits use the codecs)."""
        return self._stored[0]

    @property
    def meta(self) -> dict[str, str]:
        """The stored metadata, read back once."""
        return self._stored[1]


@dataclass
class JobOutput:
    images: list[bytes]  # PNG bytes
    metrics: dict[str, Any] = field(default_factory=dict)
    asset: AssetOutput | None = None


@dataclass
class RunContext:
    """What handlers may use beyond the model: caches, stores, the judge."""

    cache: InversionCache | None = None
    blobs: BlobStore | None = None
    assets: AssetRecords | None = None  # Redis's asset index; None where there is none
    classifier: AttributeClassifier | None = None
    clip: Scorer | None = None  # method C's CLIP scorer, where configured
    vgg: VggPerceptual | None = None  # method C's perceptual content term, where configured


RunFn = Callable[["Denoiser", Batch[P], ProgressFn, RunContext], list[JobOutput]]


@dataclass(frozen=True)
class Handler(Generic[P]):
    """A method's worker side: its spec, its parameter class and how a batch runs.

    ``batch_fields``: the parameters that must be equal for jobs to share a batch (one
    grid, one schedule, one asset); None: the method does not batch (fits run alone)."""

    spec: MethodSpec
    params: type[P]
    run: RunFn[P]
    batch_fields: tuple[str, ...] | None = None

    @property
    def batchable(self) -> bool:
        return self.batch_fields is not None


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
