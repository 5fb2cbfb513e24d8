"""The U-Net forward pass cut at h-space: down path + mid block, then the up path.

The asymmetric reverse step (Asyrp) needs eps twice, once from h and once from an
edited h'. The down path and mid block do not depend on h, so they run once and only
the up path runs twice. diffusers' ``forward`` keeps the skip tuple local, so this
module re-states it in two halves for the two families we serve:

- ``UNet2DModel`` (pixel DDPMs, google/ddpm-*),
- ``UNet2DConditionModel`` (Stable Diffusion 1.x/2.x layout), without ControlNet,
  adapters or GLIGEN, which no edit here uses.

Submodules are called as modules, so hooks on ``mid_block`` and ``down_blocks[i]``
fire exactly as in the model's own forward. A test holds the halves bit-identical
to ``forward`` for both families.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel, UNet2DModel

from worker.engine.errors import InputError


@dataclass
class UNetState:
    """What the up path needs: h, the skip tensors and the embeddings of one call."""

    h: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    emb: torch.Tensor
    encoder_hidden_states: torch.Tensor | None = None
    forward_upsample_size: bool = False
    timesteps: torch.Tensor | None = None  # kept for Fourier-embedding models


def _timesteps(t: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    ts = torch.as_tensor(t, device=device)
    if ts.ndim == 0:
        ts = ts[None]
    return ts.expand(batch) if ts.shape[0] == 1 else ts


def check_splittable(unet: torch.nn.Module) -> None:
    """Refuse the few configs whose forward the halves do not restate."""
    if isinstance(unet, UNet2DModel):
        if any(hasattr(block, "skip_conv") for block in unet.down_blocks):
            raise InputError(
                "unet: skip-sample (NCSN++) down blocks are not supported by h-space edits"
            )
        if unet.class_embedding is not None:
            raise InputError("unet: class-conditional UNet2DModel is not supported")
    elif isinstance(unet, UNet2DConditionModel):
        if unet.config.addition_embed_type is not None:
            raise InputError(
                f"unet: addition_embed_type={unet.config.addition_embed_type!r} is not supported; "
                "expected a Stable Diffusion 1.x/2.x U-Net"
            )
        if unet.class_embedding is not None:
            raise InputError("unet: class-conditional UNet2DConditionModel is not supported")
    else:
        raise InputError(
            f"unet: {type(unet).__name__} is not supported; "
            "expected UNet2DModel or UNet2DConditionModel"
        )


def down_mid(
    unet: torch.nn.Module,
    sample: torch.Tensor,
    t: int | torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
) -> UNetState:
    """Steps 0-4 of ``forward``: embeddings, conv_in, down blocks, mid block."""
    if isinstance(unet, UNet2DConditionModel):
        return _down_mid_cond(unet, sample, t, encoder_hidden_states)
    assert isinstance(unet, UNet2DModel)
    return _down_mid_pixel(unet, sample, t)


def up(unet: torch.nn.Module, state: UNetState, h: torch.Tensor | None = None) -> torch.Tensor:
    """Steps 5-6 of ``forward``: up blocks over ``h`` (default: the state's own), then the head."""
    sample = state.h if h is None else h
    if isinstance(unet, UNet2DConditionModel):
        return _up_cond(unet, state, sample)
    assert isinstance(unet, UNet2DModel)
    return _up_pixel(unet, state, sample)


def _down_mid_pixel(unet: UNet2DModel, sample: torch.Tensor, t: int | torch.Tensor) -> UNetState:
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    timesteps = _timesteps(t, sample.shape[0], sample.device)
    t_emb = unet.time_proj(timesteps).to(dtype=unet.dtype)
    emb = unet.time_embedding(t_emb)
    sample = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (sample,)
    for block in unet.down_blocks:
        sample, res = block(hidden_states=sample, temb=emb)
        skips += res
    if unet.mid_block is not None:
        sample = unet.mid_block(sample, emb)
    return UNetState(h=sample, skips=skips, emb=emb, timesteps=timesteps)


def _up_pixel(unet: UNet2DModel, state: UNetState, sample: torch.Tensor) -> torch.Tensor:
    skips = state.skips
    for block in unet.up_blocks:
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        sample = block(sample, res, state.emb)
    sample = unet.conv_out(unet.conv_act(unet.conv_norm_out(sample)))
    if unet.config.time_embedding_type == "fourier":
        assert state.timesteps is not None
        sample = sample / state.timesteps.reshape((sample.shape[0], *([1] * (sample.ndim - 1))))
    return sample


def _down_mid_cond(
    unet: UNet2DConditionModel,
    sample: torch.Tensor,
    t: int | torch.Tensor,
    encoder_hidden_states: torch.Tensor | None,
) -> UNetState:
    if encoder_hidden_states is None:
        raise InputError("cond: a text-conditioned U-Net needs prompt embeddings")
    factor = 2**unet.num_upsamplers
    forward_upsample_size = any(dim % factor != 0 for dim in sample.shape[-2:])
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    timesteps = _timesteps(t, sample.shape[0], sample.device)
    t_emb = unet.get_time_embed(sample=sample, timestep=timesteps)
    emb = unet.time_embedding(t_emb, None)
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    enc = unet.process_encoder_hidden_states(
        encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=None
    )
    sample = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (sample,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=enc)
        else:
            sample, res = block(hidden_states=sample, temb=emb)
        skips += res
    if unet.mid_block is not None:
        if getattr(unet.mid_block, "has_cross_attention", False):
            sample = unet.mid_block(sample, emb, encoder_hidden_states=enc)
        else:
            sample = unet.mid_block(sample, emb)
    return UNetState(
        h=sample,
        skips=skips,
        emb=emb,
        encoder_hidden_states=enc,
        forward_upsample_size=forward_upsample_size,
    )


def _up_cond(unet: UNet2DConditionModel, state: UNetState, sample: torch.Tensor) -> torch.Tensor:
    skips = state.skips
    last = len(unet.up_blocks) - 1
    for i, block in enumerate(unet.up_blocks):
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        upsample_size = skips[-1].shape[2:] if i < last and state.forward_upsample_size else None
        if getattr(block, "has_cross_attention", False):
            sample = block(
                hidden_states=sample,
                temb=state.emb,
                res_hidden_states_tuple=res,
                encoder_hidden_states=state.encoder_hidden_states,
                upsample_size=upsample_size,
            )
        else:
            sample = block(
                hidden_states=sample,
                temb=state.emb,
                res_hidden_states_tuple=res,
                upsample_size=upsample_size,
            )
    if unet.conv_norm_out is not None:
        sample = unet.conv_act(unet.conv_norm_out(sample))
    return unet.conv_out(sample)  # type: ignore[no-any-return]
