"""One denoiser interface over both model families (k-diffusion's ``external.py`` idea).

Methods never call diffusers: they see ``eps(x_t, t, cond)``, the schedule, the
h-space split of the U-Net and, for latent models, encode/decode and prompts.

===========  =====================================================================
family       x_t lives in
===========  =====================================================================
``pixel``    image space, [-1, 1] (``UNet2DModel``, google/ddpm-*)
``latent``   VAE latent space, ``mode() * scaling_factor`` (Stable Diffusion 1.x/2.x)
===========  =====================================================================

Activations run in the model's dtype (fp16 on CUDA by default); every tensor the
adapter returns is fp32, so scheduler arithmetic never runs in half precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from contract.models import ModelInfo
from worker.engine import unet_split
from worker.engine.errors import InputError
from worker.engine.hooks import HookManager, StepClock
from worker.engine.noise import Generators, prior_noise
from worker.engine.schedule import NoiseSchedule

Family = Literal["pixel", "latent"]
PredictionType = Literal["epsilon", "v_prediction", "sample"]
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)


@dataclass
class Conditioning:
    """Prompt embeddings for a text-conditioned model, with classifier-free guidance.

    ``embeddings`` is (B, L, D), one row per sample; ``uncond`` is (B or 1, L, D) and
    is needed when ``guidance_scale != 1``. With guidance, each U-Net call runs a batch
    of 2B ([uncond, cond]), so h-space hooks see 2B rows, unconditional rows first.
    """

    embeddings: torch.Tensor
    uncond: torch.Tensor | None = None
    guidance_scale: float = 1.0

    @property
    def guided(self) -> bool:
        return self.uncond is not None and self.guidance_scale != 1.0


@dataclass
class SplitState:
    """A U-Net call cut at h-space; ``up`` may run many times over one state."""

    unet_state: unet_split.UNetState
    x_t: torch.Tensor
    t: int
    cond: Conditioning | None

    @property
    def h(self) -> torch.Tensor:
        return self.unet_state.h


class Denoiser:
    """A frozen diffusers model behind the engine's one interface."""

    def __init__(
        self,
        *,
        name: str,
        unet: Any,  # diffusers UNet2DModel | UNet2DConditionModel
        schedule: NoiseSchedule,
        prediction_type: str = "epsilon",
        vae: Any = None,  # diffusers AutoencoderKL
        text_encoder: Any = None,  # a transformers text model
        tokenizer: Any = None,
        max_prompt_length: int = 77,
        noise_offset: float = 0.0,
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise InputError(
                f"prediction_type: {prediction_type!r} is not supported; "
                "expected epsilon, v_prediction or sample"
            )
        if not 0.0 <= noise_offset < 1.0:
            raise InputError(f"noise_offset: expected a value in [0, 1), got {noise_offset}")
        unet_split.check_splittable(unet)
        self.name = name
        self.unet: Any = unet
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.vae: Any = vae
        self.text_encoder: Any = text_encoder
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.noise_offset = float(noise_offset)
        # per-method defaults measured on this model (the folder's editing_defaults.json)
        self.editing_defaults: dict[str, dict[str, object]] = {}
        self.clock = StepClock()
        self.hooks = HookManager(unet, self.clock)
        self._compiled: Any = None  # see enable_compile
        self._buckets: list[int] = []
        self._cudagraphs = False
        self.compiled_calls = 0
        self._ab = schedule.alphas_cumprod.to(torch.float32)
        for module in (unet, vae, text_encoder):
            if module is not None:
                module.eval()
                module.requires_grad_(False)

    # ----------------------------------------------------------------- description
    @property
    def family(self) -> Family:
        return "latent" if self.vae is not None else "pixel"

    @property
    def conditional(self) -> bool:
        return self.text_encoder is not None

    @property
    def device(self) -> torch.device:
        param: torch.nn.Parameter = next(self.unet.parameters())
        return param.device

    @property
    def dtype(self) -> torch.dtype:
        param: torch.nn.Parameter = next(self.unet.parameters())
        return param.dtype

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of x_t."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (int(self.unet.config.in_channels), int(h), int(w))

    def noise(
        self, shape: Sequence[int], generator: Generators = None, device: torch.device | None = None
    ) -> torch.Tensor:
        """Noise of this model's forward process: its prior x_T and each stochastic step's.

        N(0, I), plus ``noise_offset`` times one normal draw per (row, channel) for a
        model trained with offset noise (see ``noise.prior_noise``).
        """
        return prior_noise(shape, generator, device or self.device, self.noise_offset)

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 1
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this model takes and returns."""
        c, h, w = self.sample_shape
        if self.vae is None:
            return (c, h, w)
        f = self.vae_scale_factor
        return (int(self.vae.config.in_channels), h * f, w * f)

    @property
    def num_train_timesteps(self) -> int:
        return self.schedule.num_train_timesteps

    def describe(self) -> ModelInfo:
        c, h, w = self.image_shape
        return ModelInfo(
            name=self.name,
            family=self.family,
            conditional=self.conditional,
            image_size=[h, w],
            channels=c,
            sample_shape=list(self.sample_shape),
            h_shape=list(self.h_shape),
            num_train_timesteps=self.num_train_timesteps,
            prediction_type=self.prediction_type,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            editing_defaults=self.editing_defaults,
        )

    @property
    def h_shape(self) -> tuple[int, ...]:
        """(C, H, W) of h-space, read off the config (no forward pass)."""
        c = int(self.unet.config.block_out_channels[-1])
        _, h, w = self.sample_shape
        f = 2 ** (len(self.unet.config.block_out_channels) - 1)
        return (c, -(-h // f), -(-w // f))

    # --------------------------------------------------------------------- checks
    def check_sample(self, x: torch.Tensor, what: str = "x_t") -> None:
        expected = self.sample_shape
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise InputError(
                f"{what}: expected shape (B, {expected[0]}, {expected[1]}, {expected[2]}) "
                f"for model {self.name!r}, got {tuple(x.shape)}"
            )

    def check_images(self, images: torch.Tensor) -> None:
        c, h, w = self.image_shape
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, h, w):
            raise InputError(
                f"image: model {self.name!r} takes {c}-channel {h}x{w} images "
                f"(tensor (B, {c}, {h}, {w}) in [-1, 1]), got {tuple(images.shape)}"
            )

    def _check_t(self, t: int) -> None:
        if not 0 <= t < self.num_train_timesteps:
            raise InputError(f"t: expected 0..{self.num_train_timesteps - 1}, got {t}")

    def _check_cond(self, cond: Conditioning | None, batch: int) -> None:
        if self.conditional and cond is None:
            raise InputError(
                f"cond: model {self.name!r} is text-conditioned; give prompt embeddings"
            )
        if not self.conditional and cond is not None:
            raise InputError(f"cond: model {self.name!r} is unconditional; it takes no prompt")
        if cond is not None:
            if cond.embeddings.shape[0] != batch:
                raise InputError(
                    f"cond: {cond.embeddings.shape[0]} prompt embeddings for a batch of {batch}"
                )
            if cond.guidance_scale != 1.0 and cond.uncond is None:
                raise InputError("cond: guidance_scale != 1 needs unconditional embeddings")

    # ------------------------------------------------------------------ noise model
    def _call_inputs(
        self, x_t: torch.Tensor, t: int, cond: Conditioning | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Check a call, set the clock for hooks; (x, t, embeddings) as the U-Net takes them."""
        self.check_sample(x_t)
        self._check_t(t)
        self._check_cond(cond, x_t.shape[0])
        self.clock.t = t
        x_in, enc = self._inputs(x_t, cond)
        t_in = torch.full((x_in.shape[0],), t, device=self.device, dtype=torch.long)
        return x_in, t_in, enc

    def eps(self, x_t: torch.Tensor, t: int, cond: Conditioning | None = None) -> torch.Tensor:
        """Noise prediction eps(x_t, t, cond) in fp32, guidance applied."""
        x_in, t_in, enc = self._call_inputs(x_t, t, cond)
        # No no_grad here: method C differentiates through eps w.r.t. the embeddings.
        out = self._unet_call(x_in, t_in, enc)
        return self._to_eps(out, x_t, t, cond)

    # ------------------------------------------------------------------ compiling
    def enable_compile(
        self, rows: Sequence[int], mode: str | None = None, backend: str = "inductor"
    ) -> None:
        """Serve plain U-Net calls from ``torch.compile`` graphs, one per bucket of
        ``rows`` (U-Net batch rows: 2B under guidance); a call is padded up to the next
        bucket, so a worker compiles a handful of shapes once instead of one per batch
        size. Calls with hooks attached, with inputs that need gradients, or with more
        rows than the largest bucket run eagerly; so do ``down_mid``/``up``.
        ``mode="reduce-overhead"`` adds CUDA graphs (the launch-bound floor at batch 1).
        ``backend`` is torch.compile's (the worker uses inductor; a test of the bucket
        mechanics alone may take ``aot_eager``, which builds no kernels)."""
        if not rows or min(rows) < 1:
            raise InputError(f"compile: bucket sizes must be >= 1, got {list(rows)}")
        self._compiled = torch.compile(self.unet, dynamic=False, mode=mode, backend=backend)
        self._buckets = sorted(set(int(r) for r in rows))
        self._cudagraphs = mode == "reduce-overhead"

    def disable_compile(self) -> None:
        """Back to eager calls only."""
        self._compiled, self._buckets, self._cudagraphs = None, [], False

    @property
    def compile_buckets(self) -> list[int]:
        return list(self._buckets)

    def warm_compiled(self) -> None:
        """Compile every bucket now (minutes on a CPU), so no job pays for it."""
        enc = self.encode_prompt([""]) if self.conditional else None
        for rows in self._buckets:
            x = torch.zeros(rows, *self.sample_shape, device=self.device, dtype=self.dtype)
            t = torch.full((rows,), self.num_train_timesteps - 1, device=self.device)
            e = None if enc is None else enc.to(self.device, self.dtype).expand(rows, -1, -1)
            self._unet_call(x, t, e)

    def _bucket(self, x_in: torch.Tensor, enc: torch.Tensor | None) -> int | None:
        if self._compiled is None or self.hooks.active:
            return None
        if x_in.requires_grad or (enc is not None and enc.requires_grad):
            return None
        return next((b for b in self._buckets if b >= x_in.shape[0]), None)

    def _unet_call(
        self, x_in: torch.Tensor, t_in: torch.Tensor, enc: torch.Tensor | None
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {} if enc is None else {"encoder_hidden_states": enc}
        bucket = self._bucket(x_in, enc)
        if bucket is None:
            out: torch.Tensor = self.unet(x_in, t_in, return_dict=False, **kwargs)[0]
            return out
        rows = x_in.shape[0]

        def pad(v: torch.Tensor) -> torch.Tensor:
            return torch.cat([v, v[:1].expand(bucket - rows, *v.shape[1:])]) if bucket > rows else v

        if enc is not None:
            kwargs["encoder_hidden_states"] = pad(enc)
        with torch.no_grad():
            if self._cudagraphs:  # the graph's output buffers are reused by the next replay
                torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
            out = self._compiled(pad(x_in), pad(t_in), return_dict=False, **kwargs)[0]
        self.compiled_calls += 1
        return out[:rows].clone()

    def down_mid(self, x_t: torch.Tensor, t: int, cond: Conditioning | None = None) -> SplitState:
        """The U-Net up to h-space (h hooks fire here); run ``up`` on the result."""
        x_in, t_in, enc = self._call_inputs(x_t, t, cond)
        state = unet_split.down_mid(self.unet, x_in, t_in, enc)
        return SplitState(unet_state=state, x_t=x_t, t=t, cond=cond)

    def up(self, state: SplitState, h: torch.Tensor | None = None) -> torch.Tensor:
        """eps (fp32) from a split state, over its own h or a replacement h'."""
        if h is not None:
            if h.shape != state.h.shape:
                raise InputError(f"h: expected shape {tuple(state.h.shape)}, got {tuple(h.shape)}")
            # in h's own memory layout (the mid block answers channels-last on some CPUs):
            # an edit computed through a flatten comes back contiguous, and the up path
            # would take other kernels, so an unchanged h' gave other bits than h
            h = torch.empty_like(state.h).copy_(h)
        self.clock.t = state.t
        out = unet_split.up(self.unet, state.unet_state, h)
        return self._to_eps(out, state.x_t, state.t, state.cond)

    def _inputs(
        self, x_t: torch.Tensor, cond: Conditioning | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # one memory layout in, one out: a conv kernel can answer a contiguous input in
        # channels-last on some CPUs (seen with AVX2 kernels), and a channels-last input
        # takes other kernels with another summation order, so the same x_t gave other
        # bits depending on how it was made (a fresh inversion against a cached one)
        x_in = x_t.to(device=self.device, dtype=self.dtype).contiguous()
        if cond is None:
            return x_in, None
        enc = cond.embeddings.to(device=self.device, dtype=self.dtype)
        if cond.guided:
            assert cond.uncond is not None
            unc = cond.uncond.to(device=self.device, dtype=self.dtype).expand_as(enc)
            return torch.cat([x_in, x_in]), torch.cat([unc, enc])
        return x_in, enc

    def _to_eps(
        self, out: torch.Tensor, x_t: torch.Tensor, t: int, cond: Conditioning | None
    ) -> torch.Tensor:
        out = out.float().contiguous()
        if cond is not None and cond.guided:
            uncond, text = out.chunk(2)
            out = uncond + cond.guidance_scale * (text - uncond)
        if self.prediction_type == "epsilon":
            return out
        ab = self._ab[t]
        x = x_t.to(device=out.device, dtype=torch.float32)
        if self.prediction_type == "v_prediction":
            return ab.sqrt() * out + (1 - ab).sqrt() * x
        return (x - ab.sqrt() * out) / (1 - ab).sqrt()  # "sample": out is x0

    # -------------------------------------------------------------- latent models
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> x_0 (identity for pixel models, VAE mode * scale for latent)."""
        self.check_images(images)
        if self.vae is None:
            return images.float()
        with torch.no_grad():
            x = images.to(device=self.device, dtype=self.vae.dtype)
            latents: torch.Tensor = self.vae.encode(x).latent_dist.mode()
        return latents.float() * float(self.vae.config.scaling_factor)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x_0 -> images in [-1, 1], fp32 (unclamped; ``images.to_pil`` clamps)."""
        self.check_sample(x0, what="x_0")
        if self.vae is None:
            return x0.float()
        with torch.no_grad():
            z = x0.to(device=self.device, dtype=self.vae.dtype) / float(
                self.vae.config.scaling_factor
            )
            decoded: torch.Tensor = self.vae.decode(z).sample
            return decoded.float()

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Per-token hidden states of the text encoder, (B, L, D) fp32."""
        if self.text_encoder is None or self.tokenizer is None:
            raise InputError(f"prompt: model {self.name!r} is unconditional; it takes no prompt")
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_prompt_length,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            out = self.text_encoder(
                input_ids=tokens.input_ids.to(self.device),
                attention_mask=tokens.attention_mask.to(self.device)
                if self._encoder_takes_mask
                else None,
            )
        return out.last_hidden_state.float()  # type: ignore[no-any-return]

    @property
    def _encoder_takes_mask(self) -> bool:
        # CLIP text encoders run without a padding mask (SD feeds none); BERT-like ones with.
        model_type = getattr(getattr(self.text_encoder, "config", None), "model_type", "")
        return model_type not in ("clip_text_model", "clip")

    def conditioning(
        self, prompts: list[str], guidance_scale: float = 1.0, negative_prompt: str = ""
    ) -> Conditioning:
        emb = self.encode_prompt(prompts)
        uncond = self.encode_prompt([negative_prompt]) if guidance_scale != 1.0 else None
        return Conditioning(embeddings=emb, uncond=uncond, guidance_scale=guidance_scale)
