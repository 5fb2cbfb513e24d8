"""Method C: text-embedding mixing (Wu et al., CVPR 2023), METHODS.md section C.

At step i (top first) the condition is ``lam_i c_n + (1 - lam_i) c_t`` with c_n the
neutral prompt's and c_t the target prompt's per-token embeddings; the ~n lam_i are
the only parameters. Initialised as the reference does (1 on the noisiest 40% of
the steps, 0 after), optimised with Adam through the whole differentiable sampling
run (each step checkpointed, so memory does not grow with the number of steps) on

    loss = w_content * content(orig, edit)
           + (1 - cos(E_I(orig) - E_I(edit), E_T(c_n) - E_T(c_t)))

with a pluggable scorer (``Scorer``): CLIP from a local folder where a deployment
has one (``ClipScorer``), the shipped attribute classifier offline
(``ClassifierScorer``).

Real images: invert with the neutral prompt, then record per-step corrections
``n_t = q_sample(x0, t_prev) - DDIM step result`` along the neutral run; they are
added back on the noisiest ``correct_share`` of the steps of every later run, so
lam = 1 everywhere comes back to (near) the real image.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch.utils.checkpoint import checkpoint

from worker.engine.assets import grid_of, pack, unpack
from worker.engine.denoiser import Conditioning, Denoiser
from worker.engine.errors import InputError
from worker.engine.sampling import ddim_invert, ddim_sigma, ddim_step, reverse_steps


class Scorer(Protocol):
    """The image-text scorer of the loss: embeddings in one space, and a content distance."""

    def image_embed(self, images: torch.Tensor) -> torch.Tensor: ...  # (B, D), differentiable
    def text_embed(self, prompts: list[str]) -> torch.Tensor: ...  # (B, D)
    def content(
        self, a: torch.Tensor, b: torch.Tensor, e_a: torch.Tensor, e_b: torch.Tensor
    ) -> torch.Tensor: ...  # scalar; e_a, e_b: image_embed of a and b, already computed


class ClassifierScorer:
    """The offline scorer: the attribute classifier's per-factor probabilities.

    E_I(image) concatenates each factor's softmax; E_T(prompt) puts, for each factor
    whose value the prompt names, a one-hot on that value (uniform where none is
    named), so ``E_T(c_n) - E_T(c_t)`` points from the neutral to the target value.
    Content distance: pixel MSE (no perceptual network ships offline).

    ``temperature`` divides the logits first. A classifier trained to near-certainty
    reads a clean drawing at a probability within a hair of 1, where the softmax's
    derivative is about p (1 - p): a factor that the edit changes or keeps moves the
    loss but passes back almost no gradient. Above 1 the probabilities, and so the
    gradient, stay away from that flat end.
    """

    def __init__(self, classifier: torch.nn.Module, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.classifier = classifier
        self.temperature = temperature
        self.factors: dict[str, list[str]] = classifier.factors  # type: ignore[assignment]

    def image_embed(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(images.clamp(-1, 1))
        return torch.cat(
            [(logits[name].float() / self.temperature).softmax(-1) for name in self.factors],
            dim=1,
        )

    def text_embed(self, prompts: list[str]) -> torch.Tensor:
        rows = []
        for prompt in prompts:
            text = f" {prompt.lower()} "
            parts = []
            for values in self.factors.values():
                named = [v for v in values if f" {v} " in text]
                vec = torch.full((len(values),), 1.0 / len(values))
                if len(named) == 1:
                    vec = torch.zeros(len(values))
                    vec[values.index(named[0])] = 1.0
                parts.append(vec)
            rows.append(torch.cat(parts))
        return torch.stack(rows)

    def content(
        self, a: torch.Tensor, b: torch.Tensor, e_a: torch.Tensor, e_b: torch.Tensor
    ) -> torch.Tensor:
        return torch.nn.functional.mse_loss(a, b)


class ClipScorer:
    """CLIP (``transformers.CLIPModel`` and its tokenizer) from a local folder.

    E_I / E_T: CLIP's projected image and text features, unit-normalised; images are
    resized to CLIP's input size and normalised with the folder's
    ``preprocessor_config.json`` mean and std (CLIP's own where there is none), in
    torch, so the loss stays differentiable. Content distance: 1 - cos of the two
    images' CLIP features (the perceptual term of the paper, without an LPIPS net).
    """

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu") -> None:
        from transformers import AutoTokenizer, CLIPModel

        folder = Path(folder)
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(folder).eval().requires_grad_(False)
        self.model.to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        mean, std = self.MEAN, self.STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            config = json.loads(pre.read_text())
            mean, std = config.get("image_mean", mean), config.get("image_std", std)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.size = int(self.model.config.vision_config.image_size)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    @staticmethod
    def _features(out: torch.Tensor | Any) -> torch.Tensor:
        # transformers 4 returns the projected features, 5 an output whose pooler_output they are
        feats = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    def image_embed(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.device).float().clamp(-1, 1) + 1) / 2
        x = torch.nn.functional.interpolate(
            x, size=(self.size, self.size), mode="bicubic", align_corners=False
        )
        x = (x - self.mean) / self.std
        return self._features(self.model.get_image_features(pixel_values=x))

    def text_embed(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.no_grad():
            out = self.model.get_text_features(
                input_ids=tokens.input_ids, attention_mask=tokens.attention_mask
            )
        return self._features(out)

    def content(
        self, a: torch.Tensor, b: torch.Tensor, e_a: torch.Tensor, e_b: torch.Tensor
    ) -> torch.Tensor:
        return (1 - torch.nn.functional.cosine_similarity(e_a, e_b, dim=1)).mean()


VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in ``features``


def vgg16_features() -> torch.nn.Sequential:
    """VGG16's convolutional part, laid out as torchvision's ``vgg16().features`` (its
    state-dict keys are ``N.weight`` / ``N.bias`` at the same N), without torchvision."""
    layers: list[torch.nn.Module] = []
    cin = 3
    for spec in VGG16_LAYERS:
        if spec == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(cin, int(spec), 3, padding=1), torch.nn.ReLU()]
            cin = int(spec)
    return torch.nn.Sequential(*layers)


class VggPerceptual:
    """The reference's perceptual content term: VGG16 features compared at five depths.

    The weights come from a local safetensors file of torchvision's ``vgg16`` (the keys
    of ``features``, with or without the ``features.`` prefix): nothing is downloaded.
    Distance: for each tap (relu1_2 .. relu5_3), the features unit-normalised over
    channels, the mean squared difference, summed over taps (LPIPS without its learned
    weights). Images in [-1, 1] are normalised with ImageNet's mean and std and, when
    smaller, upsampled to 64 px so the deepest taps keep a few cells.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu") -> None:
        from safetensors.torch import load_file

        state = {k.removeprefix("features."): v for k, v in load_file(str(weights)).items()}
        self.device = torch.device(device)
        self.net = vgg16_features()
        self.net.load_state_dict(state)
        self.net.to(self.device).eval().requires_grad_(False)
        self.mean = torch.tensor(self.MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.STD, device=self.device).view(1, 3, 1, 1)

    def _taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images.to(self.device).float().clamp(-1, 1) + 1) / 2
        if min(x.shape[-2:]) < 64:
            x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear")
        x = (x - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in VGG16_TAPS:
                taps.append(x / x.norm(dim=1, keepdim=True).clamp_min(1e-10))
            if i >= VGG16_TAPS[-1]:
                break
        return taps

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scalar: the perceptual distance of two batches, differentiable in both."""
        total = torch.zeros((), device=self.device)
        for fa, fb in zip(self._taps(a), self._taps(b), strict=True):
            total = total + (fa - fb).square().sum(1).mean()
        return total


class WithContent:
    """A scorer whose content distance is another one's (a perceptual network's)."""

    def __init__(self, scorer: Scorer, perceptual: VggPerceptual) -> None:
        self.scorer, self.perceptual = scorer, perceptual

    def image_embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.scorer.image_embed(images)

    def text_embed(self, prompts: list[str]) -> torch.Tensor:
        return self.scorer.text_embed(prompts)

    def content(
        self, a: torch.Tensor, b: torch.Tensor, e_a: torch.Tensor, e_b: torch.Tensor
    ) -> torch.Tensor:
        return self.perceptual.distance(a, b)


def reference_init(n: int, noisy_share: float = 0.4) -> torch.Tensor:
    """lam = 1 for the noisiest ``noisy_share`` of the n steps (20 of 50), 0 after."""
    lam = torch.zeros(n)
    lam[: round(noisy_share * n)] = 1.0
    return lam


@dataclass
class Corrections:
    """Per-step corrections of a real image's neutral run, top step first."""

    x_T: torch.Tensor
    n: list[torch.Tensor]
    apply_steps: int  # added on the first (noisiest) this many steps


Sampler = Literal["ddim", "plms"]


def _eps(
    denoiser: Denoiser,
    x: torch.Tensor,
    t: int,
    emb: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
) -> torch.Tensor:
    return denoiser.eps(x, t, Conditioning(emb, uncond, guidance))


def plms_eps(e_t: torch.Tensor, old: Sequence[torch.Tensor]) -> torch.Tensor:
    """PLMS (Liu et al. 2022, as the reference's Stable Diffusion sampler): the eps of a
    step from this step's and up to three earlier steps' predictions (Adams-Bashforth
    of orders 2, 3 and 4; the first step's pair is handled by the caller)."""
    if len(old) == 1:
        return (3 * e_t - old[-1]) / 2
    if len(old) == 2:
        return (23 * e_t - 16 * old[-1] + 5 * old[-2]) / 12
    return (55 * e_t - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24


def _step(
    denoiser: Denoiser,
    x: torch.Tensor,
    t: int,
    s: int,
    ab_t: float,
    ab_s: float,
    emb: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
    *old: torch.Tensor,
    plms: bool = False,
    clip: bool = False,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic step t -> s; (x_s, this step's eps for the PLMS history).

    DDIM uses eps(x_t, t). PLMS's first step averages eps(x_t, t) with eps at the DDIM
    estimate of x_s (one more U-Net call); later steps combine the history. ``clip``:
    each x0 estimate clamped to [-1, 1] (``ddim_step``'s ``clip_x0``). ``eta`` > 0 (DDIM
    only): a stochastic step with the given ``noise`` (the step is then fixed too)."""
    e_t = _eps(denoiser, x, t, emb, uncond, guidance)
    if not plms:
        if ddim_sigma(ab_t, ab_s, eta) == 0.0:
            noise = None  # the last step: no variance, nothing to add
        return ddim_step(x, e_t, ab_t, ab_s, eta=eta, noise=noise, clip_x0=clip)[0], e_t
    if old:
        e = plms_eps(e_t, old[-3:])
    elif s >= 0:
        x_next = ddim_step(x, e_t, ab_t, ab_s, clip_x0=clip)[0]
        e = (e_t + _eps(denoiser, x_next, s, emb, uncond, guidance)) / 2
    else:  # a one-step grid: nothing to pair with
        e = e_t
    return ddim_step(x, e, ab_t, ab_s, clip_x0=clip)[0], e_t


def _check_noises(
    eta: float, noises: Sequence[torch.Tensor] | None, n: int, sampler: Sampler
) -> None:
    if eta == 0.0:
        return
    if sampler == "plms":
        raise InputError("eta: PLMS steps are deterministic; eta > 0 needs the ddim sampler")
    if noises is None or len(noises) != n:
        got = "none" if noises is None else len(noises)
        raise InputError(f"noises: eta > 0 needs one fixed noise map per step ({n}), got {got}")


def sample_mixed(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    grid: Sequence[int],
    c_n: torch.Tensor,
    c_t: torch.Tensor,
    lam: torch.Tensor,
    *,
    uncond: torch.Tensor | None = None,
    guidance: float = 1.0,
    corrections: Corrections | None = None,
    checkpointed: bool = False,
    sampler: Sampler = "ddim",
    clip_x0: bool = False,
    eta: float = 0.0,
    noises: Sequence[torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Sampling (DDIM, or PLMS as the reference) with condition ``lam_i c_n + (1 - lam_i)
    c_t`` at step i; ``clip_x0``: every x0 estimate clamped to [-1, 1] (a pixel model's
    range). Deterministic at ``eta`` 0; with eta > 0 (DDIM) each step adds its map of
    ``noises`` (one per step, top first), fixed as x_T is (METHODS.md: "fix x_T and all
    noises"), so runs with different lams share them."""
    n = len(grid)
    if lam.shape != (n,):
        raise InputError(f"lam: expected {n} values (one per step), got {tuple(lam.shape)}")
    _check_noises(eta, noises, n, sampler)
    x = x_T.to(device=denoiser.device, dtype=torch.float32)
    c_n, c_t = c_n.to(x.device), c_t.to(x.device)
    old: list[torch.Tensor] = []
    plms = sampler == "plms"
    for step in reverse_steps(grid, denoiser.schedule):
        emb = lam[step.i] * c_n + (1 - lam[step.i]) * c_t
        run = partial(
            _step, denoiser, x, step.t, step.s, step.ab_t, step.ab_s, emb, uncond, guidance,
            plms=plms, clip=clip_x0, eta=eta,
            noise=None if noises is None else noises[step.i].to(x.device),
        )  # fmt: skip
        # checkpointed: the step's activations are recomputed in the backward pass
        x, e_t = checkpoint(run, *old, use_reentrant=False) if checkpointed else run(*old)
        old = [*old[-2:], e_t] if plms else []
        if corrections is not None and step.i < corrections.apply_steps:
            x = x + corrections.n[step.i].to(x.device)
        if progress is not None:
            progress(step.i + 1, n)
    return x


def real_image_corrections(
    denoiser: Denoiser,
    x0: torch.Tensor,
    grid: Sequence[int],
    c_n: torch.Tensor,
    *,
    uncond: torch.Tensor | None = None,
    guidance: float = 1.0,
    correct_share: float = 2 / 3,
    refine: int,
    sampler: Sampler = "ddim",
    clip_x0: bool = False,
    eta: float = 0.0,
    noises: Sequence[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Corrections:
    """Invert x0 with the neutral prompt; record ``n_t = q_sample(x0, t_prev) - step result``
    (the step of ``sampler``, with the history of the corrected run for PLMS)."""
    cond = Conditioning(c_n, uncond if guidance != 1.0 else None, guidance)
    plms = sampler == "plms"
    _check_noises(eta, noises, len(grid), sampler)
    with torch.no_grad():
        x_T = ddim_invert(denoiser, x0, grid, cond=cond, fixed_point_iters=refine).x_T
        x = x_T.to(device=denoiser.device, dtype=torch.float32)
        ns = []
        old: list[torch.Tensor] = []
        for step in reverse_steps(grid, denoiser.schedule):
            y, e_t = _step(
                denoiser, x, step.t, step.s, step.ab_t, step.ab_s, c_n, cond.uncond, guidance,
                *old, plms=plms, clip=clip_x0, eta=eta,
                noise=None if noises is None else noises[step.i].to(x.device),
            )  # fmt: skip
            old = [*old[-2:], e_t] if plms else []
            noise = denoiser.noise(x0.shape, generator, y.device)
            target = math.sqrt(step.ab_s) * x0 + math.sqrt(1 - step.ab_s) * noise
            if step.s < 0:
                target = x0.to(y.device)
            ns.append(target - y)
            x = target  # the neutral run, corrected, follows the real image
    return Corrections(x_T=x_T, n=ns, apply_steps=round(correct_share * len(grid)))


@dataclass
class LamFit:
    lam: torch.Tensor
    losses: list[float] = field(default_factory=list)
    original: torch.Tensor | None = None  # the neutral image (decoded)
    edited: torch.Tensor | None = None  # with the learned lam (decoded)


def optimise_lam(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    grid: Sequence[int],
    neutral: str,
    target: str,
    scorer: Scorer,
    *,
    lam0: torch.Tensor | None = None,
    epochs: int = 10,
    lr: float = 0.05,
    content_weight: float = 0.05,
    guidance: float = 1.0,
    corrections: Corrections | None = None,
    checkpointed: bool = True,
    sampler: Sampler = "ddim",
    clip_x0: bool = False,
    eta: float = 0.0,
    noises: Sequence[torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LamFit:
    """Adam on lam through full sampling runs (checkpointed); lam is not clamped.

    ``checkpointed=False`` keeps every step's activations for the backward pass
    (memory grows with the number of steps; the benchmark's comparison).
    """
    c_n = denoiser.encode_prompt([neutral] * x_T.shape[0])
    c_t = denoiser.encode_prompt([target] * x_T.shape[0])
    uncond = denoiser.encode_prompt([""]) if guidance != 1.0 else None
    n = len(grid)
    lam = (reference_init(n) if lam0 is None else lam0.clone()).float().requires_grad_(True)
    with torch.no_grad():
        original = denoiser.decode(
            sample_mixed(
                denoiser,
                x_T,
                grid,
                c_n,
                c_t,
                torch.ones(n),
                uncond=uncond,
                guidance=guidance,
                corrections=corrections,
                sampler=sampler,
                clip_x0=clip_x0,
                eta=eta,
                noises=noises,
            )
        )
        e_orig = scorer.image_embed(original)
        direction = (scorer.text_embed([neutral]) - scorer.text_embed([target])).to(e_orig.device)
    opt = torch.optim.Adam([lam], lr=lr)
    losses = []
    edited = original
    for epoch in range(epochs):
        # progress per sampling step of each epoch (the backward pass is not counted)
        tick = None if progress is None else partial(_epoch_tick, progress, epoch, epochs)
        with torch.enable_grad():
            x0 = sample_mixed(
                denoiser, x_T, grid, c_n, c_t, lam, uncond=uncond, guidance=guidance,
                corrections=corrections, checkpointed=checkpointed, sampler=sampler,
                clip_x0=clip_x0, eta=eta, noises=noises, progress=tick,
            )  # fmt: skip
            edited = _decode_differentiable(denoiser, x0)
            e_edit = scorer.image_embed(edited)
            delta = e_orig - e_edit
            cos = torch.nn.functional.cosine_similarity(delta, direction.expand_as(delta), dim=1)
            content = scorer.content(original, edited, e_orig, e_edit)
            loss = content_weight * content + (1 - cos).mean()
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(float(loss.detach()))
    return LamFit(lam.detach(), losses, original, edited.detach())


def _epoch_tick(
    progress: Callable[[int, int], None], epoch: int, epochs: int, i: int, n: int
) -> None:
    """Step i of n of epoch ``epoch``, as progress over all ``epochs * n`` steps."""
    progress(epoch * n + i, epochs * n)


def _decode_differentiable(denoiser: Denoiser, x0: torch.Tensor) -> torch.Tensor:
    if denoiser.vae is None:
        return x0
    z = x0.to(dtype=denoiser.vae.dtype) / float(denoiser.vae.config.scaling_factor)
    decoded: torch.Tensor = denoiser.vae.decode(z).sample
    return decoded.float()


@dataclass
class LamAsset:
    """A lam fit as stored: one mixing weight per step of ``grid``, for its prompts."""

    model: str
    grid: list[int]
    lam: torch.Tensor  # (len(grid),)
    neutral: str
    target: str
    guidance_scale: float
    sampler: Sampler  # lam is learned through one sampler; mix uses the same
    clip_x0: bool = False  # and with the same x0 clamp (older assets: none)
    eta: float = 0.0  # and the same eta, its noises drawn from each seed (older assets: 0)

    def to_safetensors(self) -> bytes:
        meta = {
            "kind": "lam",
            "model": self.model,
            "grid": json.dumps(self.grid),
            "neutral": self.neutral,
            "target": self.target,
            "guidance_scale": repr(self.guidance_scale),
            "sampler": self.sampler,
            "clip_x0": "true" if self.clip_x0 else "false",
            "eta": repr(self.eta),
        }
        return pack({"lam": self.lam}, meta)

    @classmethod
    def from_safetensors(cls, data: bytes) -> LamAsset:
        tensors, meta = unpack(data, "lam")
        return cls(
            model=meta.get("model", ""),
            grid=grid_of(meta),
            lam=tensors["lam"],
            neutral=meta["neutral"],
            target=meta["target"],
            guidance_scale=float(meta.get("guidance_scale", "1.0")),
            sampler="plms" if meta.get("sampler") == "plms" else "ddim",
            clip_x0=meta.get("clip_x0") == "true",
            eta=float(meta.get("eta", "0.0")),
        )
