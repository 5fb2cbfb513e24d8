"""Named, removable hooks on h-space and on the skip connections.

Every hook is a context manager: it is attached on entry and removed on exit,
exceptions included, so the resident U-Net is clean after every job. Hooks are
named; a second hook under a live name is refused rather than silently stacked.

Where they attach (diffusers' module names):

===============  ==========================================  =====================
site             module / kind                               tensor
===============  ==========================================  =====================
``h`` after      ``mid_block`` forward hook                  mid-block output (h)
``h`` before     ``mid_block`` forward pre-hook              mid-block input
skips of block i ``down_blocks[i]`` forward hook             its residual tuple
skip 0           ``conv_in`` forward hook                    conv_in output
===============  ==========================================  =====================

A hook function gets the tensor and the current train timestep (from the
denoiser's ``StepClock``) and returns a replacement or ``None`` to keep it.

Hooks belong to the scope they were attached in (``HookManager.scope``; the worker
opens one per batch). Only the innermost scope's hooks fire: a batch of edits that a
fit yields to, run on the same resident U-Net inside the fit's step, neither sees the
fit's hooks nor disturbs them, and the fit finds them as it left them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.utils.hooks import RemovableHandle

from worker.engine.errors import HookError

HWhere = Literal["after", "before"]
TensorEdit = Callable[[torch.Tensor, int], torch.Tensor | None]
SkipEdit = Callable[[tuple[torch.Tensor, ...], int], tuple[torch.Tensor, ...] | None]


@dataclass
class StepClock:
    """The train timestep of the U-Net call in flight; set by the denoiser before each call."""

    t: int = -1


@dataclass
class Capture:
    """What a capture hook recorded: one ``(t, tensor)`` per U-Net call, in call order."""

    records: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [tensor for _, tensor in self.records]

    def at(self, t: int) -> torch.Tensor:
        """The last tensor recorded at timestep t."""
        for step, tensor in reversed(self.records):
            if step == t:
                return tensor
        raise KeyError(f"no capture at t={t}; captured: {[s for s, _ in self.records]}")


def _checked(new: torch.Tensor, old: torch.Tensor, name: str) -> torch.Tensor:
    if new.shape != old.shape:
        raise HookError(
            f"hook {name!r} returned shape {tuple(new.shape)}, expected {tuple(old.shape)}"
        )
    return new.to(dtype=old.dtype)


class HookManager:
    """Attaches named hooks to one U-Net. One manager per resident model."""

    def __init__(self, unet: torch.nn.Module, clock: StepClock) -> None:
        self._unet = unet
        self._clock = clock
        self._scope = 0  # the innermost open scope; 0: the root
        self._next_scope = 1
        self._live: dict[tuple[int, str], list[RemovableHandle]] = {}

    @property
    def active(self) -> list[str]:
        """Names of every attached hook, in any scope (the compiled path needs none)."""
        return sorted(name for _, name in self._live)

    def clear(self) -> None:
        """Remove every hook of the current scope (the worker calls it after each job)."""
        for key in [key for key in self._live if key[0] == self._scope]:
            for handle in self._live.pop(key):
                handle.remove()

    @contextmanager
    def scope(self) -> Iterator[None]:
        """A fresh scope: the hooks attached inside fire only while it is the innermost
        one, and go when it closes; the enclosing scope's hooks pause meanwhile."""
        outer, self._scope = self._scope, self._next_scope
        self._next_scope += 1
        try:
            yield
        finally:
            self.clear()
            self._scope = outer

    def _fires(self, owner: int) -> bool:
        return self._scope == owner

    @contextmanager
    def _attached(self, name: str, handles: list[RemovableHandle]) -> Iterator[None]:
        key = (self._scope, name)
        if key in self._live:
            for handle in handles:
                handle.remove()
            raise HookError(f"a hook named {name!r} is already attached")
        self._live[key] = handles
        try:
            yield
        finally:
            for handle in self._live.pop(key, []):
                handle.remove()

    @contextmanager
    def edit_h(self, name: str, fn: TensorEdit, where: HWhere = "after") -> Iterator[None]:
        """Replace h (``after``: mid-block output; ``before``: its input) by ``fn(h, t)``."""
        mid = self._mid_block()
        clock, owner = self._clock, self._scope
        if where == "after":

            def after(_m: torch.nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor | None:
                if not self._fires(owner):
                    return None
                new = fn(out, clock.t)
                return None if new is None else _checked(new, out, name)

            handle = mid.register_forward_hook(after)
        elif where == "before":

            def before(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if not self._fires(owner):
                    return None
                h = args[0] if args else kwargs["hidden_states"]
                new = fn(h, clock.t)
                if new is None:
                    return None
                new = _checked(new, h, name)
                if args:
                    return (new, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": new}

            handle = mid.register_forward_pre_hook(before, with_kwargs=True)
        else:
            raise HookError(f"where: expected 'after' or 'before', got {where!r}")
        with self._attached(name, [handle]):
            yield

    @contextmanager
    def capture_h(
        self, name: str, where: HWhere = "after", to_cpu: bool = False
    ) -> Iterator[Capture]:
        """Record h at every U-Net call (fp32 copies, on the model's device unless ``to_cpu``)."""
        capture = Capture()
        clock = self._clock

        def record(h: torch.Tensor, _t: int) -> None:
            saved = h.detach().float().clone()
            capture.records.append((clock.t, saved.cpu() if to_cpu else saved))

        with self.edit_h(name, record, where):
            yield capture

    @contextmanager
    def edit_skips(self, name: str, block: int, fn: SkipEdit) -> Iterator[None]:
        """Replace the residual tuple that down block ``block`` hands to the up path.

        ``block = -1`` addresses skip 0, the ``conv_in`` output (a 1-tuple).
        """
        clock, owner = self._clock, self._scope
        if block == -1:
            conv_in: torch.nn.Module = self._unet.conv_in  # type: ignore[assignment]

            def on_conv_in(_m: torch.nn.Module, _a: Any, out: torch.Tensor) -> torch.Tensor | None:
                if not self._fires(owner):
                    return None
                new = fn((out,), clock.t)
                return None if new is None else _checked(new[0], out, name)

            handle = conv_in.register_forward_hook(on_conv_in)
        else:
            blocks: torch.nn.ModuleList = self._unet.down_blocks  # type: ignore[assignment]
            if not 0 <= block < len(blocks):
                raise HookError(f"block: expected -1 or 0..{len(blocks) - 1}, got {block}")

            def on_block(
                _m: torch.nn.Module, _a: Any, out: tuple[Any, ...]
            ) -> tuple[Any, ...] | None:
                if not self._fires(owner):
                    return None
                sample, res = out[0], out[1]
                new = fn(tuple(res), clock.t)
                if new is None:
                    return None
                if len(new) != len(res):
                    raise HookError(f"hook {name!r} returned {len(new)} skips, expected {len(res)}")
                new = tuple(_checked(a, b, name) for a, b in zip(new, res, strict=True))
                return (sample, new, *out[2:])

            handle = blocks[block].register_forward_hook(on_block)
        with self._attached(name, [handle]):
            yield

    @contextmanager
    def capture_skips(self, name: str, block: int) -> Iterator[Capture]:
        """Record the residual tuple of one down block (concatenated on channels) at every call."""
        capture = Capture()
        clock = self._clock

        def record(res: tuple[torch.Tensor, ...], _t: int) -> None:
            capture.records.append((clock.t, torch.cat([r.detach().float() for r in res], dim=1)))

        with self.edit_skips(name, block, record):
            yield capture

    def _mid_block(self) -> torch.nn.Module:
        mid = getattr(self._unet, "mid_block", None)
        if mid is None:
            raise HookError("this U-Net has no mid block, so it has no h-space")
        return mid  # type: ignore[no-any-return]


def count_module_hooks(module: torch.nn.Module) -> int:
    """All forward (pre-)hooks on a module tree: zero on a clean resident model."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
