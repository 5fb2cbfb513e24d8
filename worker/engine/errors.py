"""Errors the engine raises. Each names what was expected, so callers can show it."""


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelLoadError(EngineError):
    """A model could not be found, or its folder is not a loadable diffusers model."""


class UnsafeWeightsError(ModelLoadError):
    """The folder has only pickled weights (``.bin``, ``.ckpt``, ``.pt``): safetensors only."""


class InputError(EngineError, ValueError):
    """A tensor or parameter handed to the engine does not fit the model or the method."""


class HookError(EngineError):
    """A hook was attached twice under one name, or a hook returned a tensor of the wrong shape."""
