"""The model registry: each configured model is loaded once and stays resident, frozen."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from worker.engine.denoiser import Denoiser
from worker.engine.errors import ModelLoadError
from worker.engine.loading import load_denoiser


@dataclass(frozen=True)
class ModelSpec:
    """Where a named model lives and how to hold it."""

    name: str
    path: str  # a local diffusers folder or a hub id
    device: str = "auto"
    dtype: str = "auto"


class ModelRegistry:
    """Loads a model on first use (or all at start with ``load_all``) and keeps it.

    Rule: one resident copy per name; ``get`` never loads twice, even from two threads.
    """

    def __init__(self, specs: list[ModelSpec]) -> None:
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ModelLoadError(f"models: duplicate names in {names}")
        self._specs = {spec.name: spec for spec in specs}
        self._loaded: dict[str, Denoiser] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        if name not in self._specs:
            known = ", ".join(self._specs) or "none configured"
            raise ModelLoadError(f"model: unknown model {name!r}; known models: {known}")
        return self._specs[name]

    def get(self, name: str) -> Denoiser:
        spec = self.spec(name)
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load_denoiser(
                    spec.path, name=name, device=spec.device, dtype=spec.dtype
                )
            return self._loaded[name]

    def load_all(self) -> None:
        for name in self._specs:
            self.get(name)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded
