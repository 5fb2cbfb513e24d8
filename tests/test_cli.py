"""The command line: generated method commands, --local on a tiny model, gc, errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cli.main import main


def _png(path: Path, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _metrics(out: str) -> dict[str, Any]:
    """The JSON line a method command prints last."""
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_edit_reconstruct_local_writes_a_png_and_prints_psnr(
    pixel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.png"
    code = main(["edit", "reconstruct", "--local", "--model", str(pixel_dir),
                 "--image", str(_png(tmp_path / "in.png")), "--steps", "5",
                 "--inversion", "ddpm", "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert Image.open(out).size == (16, 16)
    # exact inversion: only the 8-bit rounding of the output is lost (>= 48 dB)
    assert _metrics(capsys.readouterr().out)["psnr_db"] > 45.0


def test_local_refusals_name_the_field(
    pixel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = str(_png(tmp_path / "big.png", size=24))
    base = ["edit", "reconstruct", "--local", "--model", str(pixel_dir), "--out", str(tmp_path)]
    assert main([*base, "--image", big]) == 2
    assert "inputs.image: " in (err := capsys.readouterr().err) and "24x24" in err, err
    assert main([*base, "--image", big, "--steps", "3", "--fit", "resize"]) == 0
    capsys.readouterr()
    small = str(_png(tmp_path / "in.png"))
    assert main([*base, "--image", small, "--inversion", "ddpm", "--refine", "2"]) == 2
    assert "params.refine" in capsys.readouterr().err  # refine is for DDIM inversion only
    missing = ["edit", "reconstruct", "--local", "--model", str(tmp_path / "none"),
               "--image", small]  # fmt: skip
    assert main(missing) == 2
    assert "no folder at" in capsys.readouterr().err


def test_edit_inject_local_takes_generated_options(
    pixel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, style = _png(tmp_path / "c.png"), _png(tmp_path / "s.png")
    out = tmp_path / "out.png"
    args = ["edit", "inject", "--local", "--model", str(pixel_dir), "--content", str(content),
            "--style", str(style), "--steps", "5", "--out", str(out)]  # fmt: skip
    assert main([*args, "--g", "0.5", "--asymmetric", "false"]) == 0
    assert Image.open(out).size == (16, 16)
    capsys.readouterr()
    assert main([*args, "--g", "3"]) == 2
    assert "params.g" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: a parameter's type is checked before it runs
        main([*args, "--t-edit", "soon"])


def test_a_local_fit_writes_an_asset_that_a_local_edit_reads(
    pixel_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [arg for n in range(3) for arg in ("--images", str(_png(tmp_path / f"{n}.png")))]
    fit = ["fit", "style-noise", "--local", "--model", str(pixel_dir), "--name", "grain",
           *images, "--out", str(tmp_path / "assets")]  # fmt: skip
    assert main(fit) == 0
    result = _metrics(capsys.readouterr().out)
    asset = Path(result["asset"])
    assert asset == tmp_path / "assets" / "grain.safetensors" and asset.is_file()
    assert result["metrics"]["images"] == 3
    out = tmp_path / "styled.png"
    edit = ["edit", "style-generate", "--local", "--model", str(pixel_dir), "--asset",
            str(asset), "--steps", "3", "--out", str(out)]  # fmt: skip
    assert main(edit) == 0 and Image.open(out).size == (16, 16)


def test_every_method_has_a_command_and_every_parameter_an_option() -> None:
    from cli.main import build_parser
    from cli.methods import add_method_options, collect
    from contract.methods import METHODS

    parser = build_parser()
    for spec in METHODS.values():
        verb = "fit" if spec.kind.value == "fit" else "edit"
        required = [arg for role in spec.inputs for arg in (f"--{role}", "x.png")]
        for name, info in spec.params.model_fields.items():
            if info.is_required():
                required += [f"--{name.replace('_', '-')}", "x"]
        args = parser.parse_args([verb, spec.name, "--model", "m", *required])
        inputs, params = collect(args, spec)
        assert set(inputs) == set(spec.inputs), spec.name
        required_params = {n for n, f in spec.params.model_fields.items() if f.is_required()}
        assert set(params) == required_params, spec.name  # options left out are not sent
        alone = argparse.ArgumentParser()
        add_method_options(alone, spec)
        options = {action.dest for action in alone._actions}
        assert {f"param.{n}" for n in spec.params.model_fields} <= options, spec.name


def test_gc_reads_the_workers_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import store.retention
    from store.retention import GcReport

    seen: dict[str, Any] = {}

    def collect_garbage(redis: Any, blob_dir: Path, **kwargs: Any) -> GcReport:
        seen.update(blob_dir=blob_dir, **kwargs)
        return GcReport()

    monkeypatch.setattr(store.retention, "collect_garbage", collect_garbage)
    monkeypatch.setenv("EDITSERVE_BLOB_DIR", str(tmp_path))
    monkeypatch.setenv("EDITSERVE_GC_MIN_AGE_S", "120")
    assert main(["gc", "--dry-run"]) == 0
    assert seen["blob_dir"] == tmp_path and seen["min_age_s"] == 120.0 and seen["dry_run"]
    assert seen["inversion_max_age_s"] == 7 * 86400.0
    assert main(["gc", "--min-age-hours", "2"]) == 0 and seen["min_age_s"] == 7200.0


def test_a_client_command_shows_the_apis_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.client import ApiFailure, Client
    from cli.main import main

    def refuse(self: Client) -> list[dict[str, object]]:
        body = {"error": {"code": "store_unavailable", "message": "the job store is down"}}
        raise ApiFailure(503, body)

    monkeypatch.setattr(Client, "models", refuse)
    monkeypatch.setattr(Client, "methods", refuse)
    for command in (["models"], ["methods"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.strip() == "error: HTTP 503: the job store is down", err
