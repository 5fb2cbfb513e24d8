"""The command line: ``editserve reconstruct`` end to end on a tiny model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli import main


def _png(path: Path, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_reconstruct_writes_a_png_and_prints_psnr(
    pixel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.png"
    args = ["reconstruct", "--model", str(pixel_dir), "--image", str(_png(tmp_path / "in.png"))]
    code = main(
        [*args, "--steps", "5", "--inversion", "ddpm", "--out", str(out), "--device", "cpu"]
    )
    assert code == 0
    assert Image.open(out).size == (16, 16)
    match = re.search(r"psnr_db=([\d.]+)", capsys.readouterr().out)
    assert match is not None
    # exact inversion: only the 8-bit rounding of the output is lost (>= 48 dB)
    assert float(match.group(1)) > 45.0


def test_reconstruct_refuses_a_wrong_size_image(
    pixel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _png(tmp_path / "big.png", size=24)
    code = main(
        [
            "reconstruct",
            "--model",
            str(pixel_dir),
            "--image",
            str(image),
            "--out",
            str(tmp_path / "o.png"),
        ]
    )
    assert code == 2
    assert "takes 16x16 images, got 24x24" in capsys.readouterr().err


def test_reconstruct_fit_resize(pixel_dir: Path, tmp_path: Path) -> None:
    image = _png(tmp_path / "big.png", size=24)
    out = tmp_path / "o.png"
    code = main(
        [
            "reconstruct",
            "--model",
            str(pixel_dir),
            "--image",
            str(image),
            "--out",
            str(out),
            "--steps",
            "3",
            "--fit",
            "resize",
        ]
    )
    assert code == 0 and out.exists()


def test_reconstruct_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["reconstruct", "--model", str(tmp_path / "none"), "--image", "x.png", "--out", "o.png"]
    )
    assert code == 2
    assert "no folder at" in capsys.readouterr().err


def test_edit_inject_writes_a_png(
    pixel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, style = _png(tmp_path / "c.png"), _png(tmp_path / "s.png")
    out = tmp_path / "out.png"
    code = main(["edit", "inject", "--model", str(pixel_dir), "--content", str(content),
                 "--style", str(style), "--param", "steps=5", "--param", "g=0.5",
                 "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert code == 0 and Image.open(out).size == (16, 16)
    assert '"g":0.5' in capsys.readouterr().out
    bad = main(["edit", "inject", "--model", str(pixel_dir), "--content", str(content),
                "--style", str(style), "--param", "g=3", "--out", str(out)])  # fmt: skip
    assert bad == 2 and "--param g:" in capsys.readouterr().err


def test_a_client_command_shows_the_apis_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main
    from service.client import ApiFailure, Client

    def refuse(self: Client) -> list[dict[str, object]]:
        body = {"error": {"code": "store_unavailable", "message": "the job store is down"}}
        raise ApiFailure(503, body)

    monkeypatch.setattr(Client, "models", refuse)
    monkeypatch.setattr(Client, "methods", refuse)
    for command in (["models"], ["methods"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.strip() == "error: HTTP 503: the job store is down", err
