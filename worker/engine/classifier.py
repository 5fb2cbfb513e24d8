"""The attribute classifier: judges edits, labels generated samples, scores method C offline.

A small CNN with one softmax head per factor. Stored like every model here: a
folder with ``config.json`` (the factors and their values) and
``model.safetensors``; never pickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from worker.engine.errors import ModelLoadError

# Grain: the mean absolute difference of an image from its 3x3 median, in 0-255 units.
# The generator draws flat areas, so only anti-aliased edges differ from the median:
# 0.24 median, 0.56 max over 256 held-out generator images (seed 7_300_000); Gaussian
# noise of sd 2.6/255 over them gives about 2.0. Above the limit an image is grainy: the
# judge's evaluations report it, and the valid head of version 4 was trained to read
# it as invalid (``train_classifier --grain``).
GRAIN_LIMIT = 2.0


def grain(x: torch.Tensor) -> torch.Tensor:
    """(N,) grain of images x in [-1, 1], (N, 3, H, W): see GRAIN_LIMIT."""
    v = (x.detach().float().clamp(-1, 1) + 1) * 127.5
    patches = torch.nn.functional.pad(v, (1, 1, 1, 1), mode="replicate").unfold(2, 3, 1)
    median = patches.unfold(3, 3, 1).flatten(-2).median(dim=-1).values
    return (v - median).abs().mean(dim=(1, 2, 3))


class AttributeClassifier(nn.Module):
    """Images in [-1, 1], (B, 3, H, W) -> one logit vector per factor."""

    def __init__(
        self, factors: dict[str, list[str]], width: int = 32, image_size: int = 32
    ) -> None:
        super().__init__()
        self.factors = {name: list(values) for name, values in factors.items()}
        self.width = width
        self.image_size = image_size

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1, stride=2),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
            )

        w = width
        self.features = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 4 * w))
        flat = 4 * w * (image_size // 8) ** 2
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(flat, 256), nn.SiLU())
        self.heads = nn.ModuleDict({name: nn.Linear(256, len(v)) for name, v in factors.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(self.features(images))
        return {name: head(z) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per factor: (predicted index, its probability)."""
        param = next(self.parameters())
        logits = self(images.to(device=param.device, dtype=param.dtype))
        out = {}
        for name, logit in logits.items():
            prob, idx = logit.float().softmax(-1).max(-1)
            out[name] = (idx.cpu(), prob.cpu())
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "_class_name": "AttributeClassifier",
            "factors": self.factors,
            "width": self.width,
            "image_size": self.image_size,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> AttributeClassifier:
        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"classifier: cannot read {folder}/config.json: {exc}") from exc
        if config.get("_class_name") != "AttributeClassifier":
            raise ModelLoadError(f"classifier: {folder} does not hold an AttributeClassifier")
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise ModelLoadError(f"classifier: {folder} has no model.safetensors")
        model = cls(config["factors"], config["width"], config["image_size"])
        model.load_state_dict(load_file(str(weights)))
        return model.to(device).eval().requires_grad_(False)
