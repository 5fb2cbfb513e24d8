"""The editing engine: a library with no Redis or HTTP in it.

A denoiser adapter over diffusers models, inversion and sampling with
trajectories, named hooks on h-space and the skips, and one module per method.
"""

from worker.engine.denoiser import Conditioning, Denoiser
from worker.engine.errors import (
    EngineError,
    HookError,
    InputError,
    ModelLoadError,
    UnsafeWeightsError,
)
from worker.engine.loading import load_denoiser
from worker.engine.registry import ModelRegistry, ModelSpec
from worker.engine.sampling import (
    NoiseMaps,
    Trajectory,
    asymmetric_eps,
    asymmetric_step,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddpm_invert,
)
from worker.engine.schedule import NoiseSchedule, timestep_grid

__all__ = [
    "Conditioning",
    "Denoiser",
    "EngineError",
    "HookError",
    "InputError",
    "ModelLoadError",
    "ModelRegistry",
    "ModelSpec",
    "NoiseMaps",
    "NoiseSchedule",
    "Trajectory",
    "UnsafeWeightsError",
    "asymmetric_eps",
    "asymmetric_step",
    "ddim_invert",
    "ddim_sample",
    "ddim_step",
    "ddpm_invert",
    "load_denoiser",
    "timestep_grid",
]
