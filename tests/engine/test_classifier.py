from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worker.engine import ModelLoadError
from worker.engine.classifier import AttributeClassifier


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AttributeClassifier({"shape": ["a", "b"], "colour": ["r", "g", "b"]}, width=8).eval()
    model.save(tmp_path / "clf")
    back = AttributeClassifier.load(tmp_path / "clf")
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert all(torch.equal(model(x)[k], back(x)[k]) for k in ("shape", "colour"))
    idx, prob = back.predict(x)["colour"]
    assert idx.shape == (3,) and bool(((prob > 1 / 3) & (prob <= 1)).all())
    assert not (tmp_path / "clf" / "model.bin").exists()


def test_load_refuses_a_folder_without_weights(tmp_path: Path) -> None:
    AttributeClassifier({"shape": ["a", "b"]}, width=8).save(tmp_path / "clf")
    (tmp_path / "clf" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no model\.safetensors"):
        AttributeClassifier.load(tmp_path / "clf")
