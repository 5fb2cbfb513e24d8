"""The gallery: each method's default edit on the examples, inputs beside outputs.

Starts the embedded stack (bundled Redis, one worker, the API) on the shipped models
and works as a user would, over HTTP, sending only what a method requires: each
model's editing defaults (``editing_defaults.json``) fill in the rest. For each
method it writes one PNG under ``--out``: one row per case, the inputs, then the
output, each tile magnified 6x and captioned with what the classifier reads in it
(``invalid`` when its ``valid`` head says the picture is not a valid image).

    python -m benchmarks.gallery --out docs/gallery
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks import wait_for_job
from service.embedded import LocalStack, RedisProcess
from worker.engine.classifier import AttributeClassifier
from worker.training import aligned
from worker.training.examples import EXAMPLES, file_name

ROOT = Path(__file__).resolve().parents[1]
TILE = 192  # a 32 px image at 6x: room for the caption
CAPTION = 26


def _wait(api: str, job_id: str) -> dict[str, Any]:
    job = wait_for_job(api, job_id)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id}: {job['status']}: {job['error']}")
    return job


class Client:
    def __init__(self, api: str) -> None:
        self.api = api

    def upload(self, png: bytes) -> str:
        r = httpx.post(f"{self.api}/v1/images", files={"file": ("x.png", png, "image/png")})
        r.raise_for_status()
        return str(r.json()["id"])

    def submit(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(f"{self.api}/v1/{route}", json=body, timeout=60)
        if r.status_code != 202:
            raise RuntimeError(f"{route} {body}: {r.status_code} {r.text}")
        return _wait(self.api, r.json()["id"])

    def outputs(self, job: dict[str, Any]) -> list[bytes]:
        return [httpx.get(f"{self.api}{link}").content for link in job["output_links"]]

    def asset(self, job: dict[str, Any]) -> dict[str, Any]:
        return dict(httpx.get(f"{self.api}{job['asset_link']}").json())


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def reading(clf: AttributeClassifier, png: bytes) -> str:
    """What the judge sees: "small wide red circle / grey", or "invalid (0.97)"."""
    x = torch.from_numpy(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    pred = clf.predict(x.permute(2, 0, 1)[None].float() / 127.5 - 1.0)
    if "valid" in pred and int(pred["valid"][0][0]) == 0:
        return f"invalid ({float(pred['valid'][1][0]):.2f})"
    words = {f: clf.factors[f][int(pred[f][0][0])] for f in clf.factors if f != "valid"}
    order = [f for f in ("size", "aspect", "position", "colour", "shape") if f in words]
    low = min(float(pred[f][1][0]) for f in words)
    text = " ".join(words[f] for f in order) + f" / {words.get('background', '?')}"
    return text + ("" if low > 0.9 else f" ({low:.2f})")


def sheet(rows: Sequence[Sequence[tuple[str, bytes]]], clf: AttributeClassifier) -> Image.Image:
    """Tiles (heading, PNG) in rows; each captioned with its heading and the judge's reading."""
    cols = max(len(r) for r in rows)
    out = Image.new("RGB", (cols * TILE, len(rows) * (TILE + 2 * CAPTION)), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for i, row in enumerate(rows):
        y = i * (TILE + 2 * CAPTION)
        for j, (heading, png) in enumerate(row):
            tile = (
                Image.open(io.BytesIO(png))
                .convert("RGB")
                .resize((TILE, TILE), Image.Resampling.NEAREST)
            )
            out.paste(tile, (j * TILE, y))
            draw.text((j * TILE + 3, y + TILE + 2), heading, fill=(0, 0, 0))
            draw.text((j * TILE + 3, y + TILE + CAPTION - 6), reading(clf, png), fill=(90, 90, 90))
    return out


def _style_set(colour: str, background: str, count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    style = {"colour": aligned.FACTORS["colour"].index(colour),
             "background": aligned.FACTORS["background"].index(background)}  # fmt: skip
    images = []
    for _ in range(count):
        values = {f: style.get(f, int(rng.integers(len(v)))) for f, v in aligned.FACTORS.items()}
        images.append(_png(aligned.render(aligned.Labels(**values), rng)))
    return images


# D on the text model: prompts naming the content only, the style from the start
STYLE_PROMPTS = ("a large tall circle", "a small wide square", "a large wide triangle",
                 "a small tall circle")  # fmt: skip
PAGES = ("reconstruct", "inject", "direction", "boundary-edit", "style-generate", "mix")


def build(
    client: Client, clf: AttributeClassifier, out: Path, text_model: str,
    only: Sequence[str] = PAGES,
) -> list[Path]:  # fmt: skip
    """The pages of ``only``; ``text_model``: the text model's folder ('' leaves C out,
    and the text model's D row), loaded here too for the neutral images beside C's
    mixes."""
    examples = {names: (ROOT / "examples" / file_name(names)).read_bytes() for names in EXAMPLES}
    ids = {names: client.upload(png) for names, png in examples.items()}
    names = list(EXAMPLES)
    pages: dict[str, list[list[tuple[str, bytes]]]] = {}

    def edit(method: str, inputs: dict[str, str], **params: Any) -> bytes:
        body = {"model": "shapes32", "method": method, "inputs": inputs, "params": params}
        return client.outputs(client.submit("edits", body))[0]

    def fit(method: str, model: str = "shapes32", **params: Any) -> dict[str, Any]:
        return client.submit("fits", {"model": model, "method": method, "params": params})

    def wanted(page: str, cases: Sequence[Any]) -> Sequence[Any]:
        return cases if page in only else ()  # --only: the other pages are left as they are

    if "reconstruct" in only:
        pages["reconstruct"] = [
            [("input", examples[n]), ("reconstruct", edit("reconstruct", {"image": ids[n]}))]
            for n in names[:4]
        ]
    pairs = [(names[0], names[1]), (names[1], names[0]), (names[2], names[3]), (names[5], names[4])]
    pages["inject"] = [
        [("content", examples[c]), ("style", examples[s]),
         ("inject", edit("inject", {"content": ids[c], "style": ids[s]}))]
        for c, s in wanted("inject", pairs)
    ]  # fmt: skip
    # E: a supervised direction per target, fitted once, applied to examples lacking it
    rows = []
    # (colour last: on shapes32 it is not in h, and the edit leaves it as it was)
    for factor, value in wanted("direction", (("size", "large"), ("shape", "square"),
                                             ("aspect", "tall"), ("colour", "red"))):  # fmt: skip
        fitted = fit(
            "directions", name=f"{factor}-{value}", kind="supervised", factor=factor, value=value
        )
        lacking = [n for n in names if n[list(aligned.FACTORS).index(factor)] != value][:2]
        for n in lacking:
            out_png = edit("direction", {"image": ids[n]}, asset=fitted["asset"])
            rows.append([("input", examples[n]), (f"direction {factor}={value}", out_png)])
    pages["direction"] = rows
    # B: a boundary per target; the edit's distance is the model's default strength
    rows = []
    for factor, value in wanted("boundary-edit", (("colour", "red"), ("size", "large"))):
        fitted = fit("boundary", name=f"{factor}-{value}", factor=factor, value=value)
        lacking = [n for n in names if n[list(aligned.FACTORS).index(factor)] != value][:2]
        for n in lacking:
            out_png = edit("boundary-edit", {"image": ids[n]}, asset=fitted["asset"])
            rows.append([("input", examples[n]), (f"boundary {factor}={value}", out_png)])
    pages["boundary-edit"] = rows
    # D: a style from 8 images sharing colour and background, then new samples
    rows = []
    styles = wanted("style-generate", (("red", "white"), ("yellow", "black")))
    for i, (colour, background) in enumerate(styles):
        style = _style_set(colour, background, 8, seed=5_000_000 + i)
        uploaded = [client.upload(png) for png in style]
        fitted = fit("style-noise", name=f"{colour}-on-{background}", images=uploaded)
        samples = []
        for seed in range(4):
            body = {"model": "shapes32", "method": "style-generate", "seed": seed,
                    "params": {"asset": fitted["asset"]}}  # fmt: skip
            samples.append((f"sample {seed}", client.outputs(client.submit("edits", body))[0]))
        rows.append([("style image", style[0]), ("style image", style[1]), *samples])
        if text_model:  # the same style on the text model, each sample with its prompt
            fitted = fit("style-noise", "shapes32-text", name=f"{colour}-on-{background}",
                         images=uploaded)  # fmt: skip
            samples = []
            for seed, prompt in enumerate(STYLE_PROMPTS):
                body = {"model": "shapes32-text", "method": "style-generate", "seed": seed,
                        "params": {"asset": fitted["asset"], "prompt": prompt}}  # fmt: skip
                image = client.outputs(client.submit("edits", body))[0]
                samples.append((prompt.removeprefix("a "), image))
            rows.append([("style image", style[0]), ("style image", style[1]), *samples])
    pages["style-generate"] = rows
    if text_model and "mix" in only:  # C: a lam fitted with the model's defaults, new seeds
        from benchmarks.defaults import neutral_images
        from worker.engine import load_denoiser
        from worker.engine.images import to_pil
        from worker.engine.methods.mixing import LamAsset
        from worker.engine.schedule import timestep_grid
        from worker.methods.handler import png

        text_dn = load_denoiser(text_model, name="shapes32-text", device="cpu", dtype="float32")
        rows = []
        for neutral, target in (("a circle", "a blue circle"), ("a square", "a large square")):
            name = target.replace(" ", "-")
            fitted = fit("lam", "shapes32-text", name=name, neutral=neutral, target=target)
            used = client.asset(fitted)["params"]  # the fit's params, the defaults filled in
            grid = timestep_grid(used["steps"], text_dn.num_train_timesteps)
            sampling = LamAsset(text_dn.name, grid, torch.ones(len(grid)), neutral, target,
                                used["guidance_scale"], used["sampler"], used["clip_x0"],
                                used["eta"])  # fmt: skip
            plain = to_pil(neutral_images(text_dn, sampling, range(100, 103)))
            row = []
            for seed in range(3):
                body = {"model": "shapes32-text", "method": "mix", "seed": 100 + seed,
                        "params": {"asset": fitted["asset"]}}  # fmt: skip
                row.append((f"{neutral}, seed {100 + seed}", png(plain[seed])))
                row.append(
                    (f"mix seed {100 + seed}", client.outputs(client.submit("edits", body))[0])
                )
            rows.append(row)
        pages["mix"] = rows
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for method, page in pages.items():
        if not page:
            continue
        path = out / f"{method}.png"
        sheet(page, clf).save(path, optimize=True)
        paths.append(path)
        print(path, flush=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=str(ROOT / "docs" / "gallery"))
    p.add_argument("--model", default=str(ROOT / "models" / "shapes32-ddpm"))
    p.add_argument("--text-model", default=str(ROOT / "models" / "shapes32-text"),
                   help="'' leaves method C out")  # fmt: skip
    p.add_argument("--classifier", default=str(ROOT / "models" / "shapes32-classifier"))
    p.add_argument("--only", nargs="+", choices=PAGES, default=list(PAGES))
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="editserve-gallery-"))
    print(f"logs and data in {tmp}", file=sys.stderr)
    models = f"shapes32={args.model}" + (
        f",shapes32-text={args.text_model}" if args.text_model else ""
    )
    redis = RedisProcess(tmp / "redis").start()
    env = {**os.environ, "EDITSERVE_REDIS_URL": redis.url, "EDITSERVE_BLOB_DIR": str(tmp / "b"),
           "EDITSERVE_MODELS": models, "EDITSERVE_DEVICE": "cpu",
           "EDITSERVE_CLASSIFIER": args.classifier}  # fmt: skip
    stack = LocalStack(redis_url=redis.url, blob_dir=tmp / "b", env=env, log_dir=tmp)
    try:
        stack.start_worker("gallery")
        client = Client(stack.start_api("--no-access-log"))
        clf = AttributeClassifier.load(args.classifier)
        build(client, clf, Path(args.out), args.text_model, args.only)
    finally:
        stack.stop()
        redis.stop()
    print(json.dumps({"out": args.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
