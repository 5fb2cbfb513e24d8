"""Each method's default edit on a shipped model, judged by the classifier.

The jobs take the service's own parameter path: the method's parameter model with
the model's editing defaults merged in (what the API hands a worker), run by the
worker's executor, fits included (their assets are what the edits use). Inputs are
the examples plus ``--images`` held-out generator images. Per method, the share of
outputs *in distribution* (the classifier's ``valid`` head says valid and every factor
is read with confidence > 0.9) and the method's own figures:

- reconstruct: every factor kept;
- inject: held-out (content, style) pairs that differ in every factor: the output keeps
  the content image's content factors, takes the style image's style factors, both;
- direction: a supervised directions fit per target (classifier-labelled samples),
  applied to held-out images lacking the value: success, preservation;
- boundary-edit: a boundary fit per target, the same images: success, preservation;
- style-generate: a style-noise fit per style (8 images sharing colour and
  background), ``--images`` samples: takes the colour, the background, both; with
  ``--text-model`` also on that model, each sample prompted with a random shape, size
  and aspect (no style): the same, and whether every content factor is the prompt's;
- mix (``--text-model``): a lam fit per task on its seed(s) (the model's ``lam``
  defaults), applied to 32 other seeds: success, preservation against the neutral
  prompt's image of the same seed.

    python -m benchmarks.defaults --model models/shapes32-ddpm \\
        --classifier models/shapes32-classifier --only reconstruct inject
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks import model_domain, write_json
from contract.jobs import JobKind, JobPayload
from contract.methods import METHODS
from contract.spec import with_model_defaults
from store.blobs import LocalBlobStore
from worker.engine import Denoiser, load_denoiser
from worker.engine.classifier import GRAIN_LIMIT, AttributeClassifier, grain
from worker.engine.images import from_uint8, to_pil
from worker.engine.methods.mixing import LamAsset
from worker.executor import JobOutput, RunContext, prepare, run_batch
from worker.inversion_cache import InversionCache

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT_SEED = 3_300_000_000
TARGETS = {
    "shape": "square",
    "size": "large",
    "aspect": "tall",
    "position": "top left",
    "colour": "red",
    "background": "white",
}
STYLES = (("red", "white"), ("yellow", "black"))
MIX_TASKS = (  # neutral, target, factor, value
    ("a circle", "a blue circle", "colour", "blue"),
    ("a square", "a square on a white background", "background", "white"),
    ("a triangle", "a large triangle", "size", "large"),
)


class _Assets:
    """The asset index the executor reads, in memory."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def get(self, asset_id: str) -> dict[str, Any] | None:
        return self.records.get(asset_id)


class Bench:
    def __init__(
        self, dn: Denoiser, clf: AttributeClassifier, gen: Any, folder: Path,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        self.dn, self.clf, self.gen = dn, clf, gen
        self.overrides = overrides or {}  # per method: values a request sets (``--set``)
        self.save_dir: Path | None = None  # ``--save``: input / output strips, to look at
        self.store = LocalBlobStore(folder)
        self.assets = _Assets()
        self.ctx = RunContext(
            blobs=self.store, assets=self.assets, classifier=clf, cache=InversionCache()
        )

    def put(self, images: np.ndarray) -> list[str]:
        ids = []
        for image in images:
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            ids.append(self.store.put(buf.getvalue()))
        return ids

    def payload(
        self, method: str, inputs: dict[str, str] | None = None, seed: int = 0, **params: Any
    ) -> JobPayload:
        kind = METHODS[method].kind
        own = {**self.overrides.get(method, {}), **params}
        merged = with_model_defaults(method, own, self.dn.editing_defaults)
        return JobPayload(id=uuid.uuid4().hex, kind=kind, model=self.dn.name, method=method,
                          params=merged, inputs=inputs or {}, seed=seed)  # fmt: skip

    def run(self, payloads: list[JobPayload], batch: int = 16) -> list[JobOutput]:
        outs: list[JobOutput] = []
        for start in range(0, len(payloads), batch):
            chunk = [prepare(p, self.dn, self.store) for p in payloads[start : start + batch]]
            outs += run_batch(self.dn, chunk, lambda *_: None, context=self.ctx)
        return outs

    def fit(self, method: str, **params: Any) -> tuple[str, JobOutput]:
        payload = self.payload(method, seed=1, name=method, **params)
        assert payload.kind == JobKind.FIT
        out = self.run([payload])[0]
        assert out.asset is not None
        asset_id = uuid.uuid4().hex
        self.assets.records[asset_id] = {
            "id": asset_id, "model": self.dn.name, "method": method, "owner": None,
            "blob": self.store.put(out.asset.data),
        }  # fmt: skip
        return asset_id, out

    @staticmethod
    def images(outs: list[JobOutput]) -> np.ndarray:
        """(N, H, W, 3) uint8: the outputs' first images, decoded."""
        return np.stack([np.array(Image.open(io.BytesIO(o.images[0])).convert("RGB"))
                         for o in outs])  # fmt: skip

    def judge(
        self, outs: list[JobOutput], images: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, factors) labels and (N,) in-distribution flags of the outputs' first images
        (``images``: those already decoded by ``images``)."""
        return self.judge_tensor(from_uint8(self.images(outs) if images is None else images))

    def judge_tensor(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return judge_tensor(self.clf, list(self.gen.FACTORS), x)


def judge_tensor(
    clf: AttributeClassifier, factors: list[str], x: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """(N, factors) labels and (N,) in-distribution flags of images x in [-1, 1]: the
    valid head says valid (> 0.9) and every factor is read with confidence > 0.9."""
    pred = clf.predict(x.clamp(-1, 1))
    labels = np.stack([pred[f][0].numpy() for f in factors], axis=1)
    confident = np.all([pred[f][1].numpy() > 0.9 for f in factors], axis=0)
    if "valid" in pred:
        confident &= (pred["valid"][0].numpy() == 1) & (pred["valid"][1].numpy() > 0.9)
    return labels, confident


def _tile_rows(rows: list[np.ndarray], h: int, w: int, cols: int) -> np.ndarray:
    """Rows of tiles (each (n, h, w, 3), n <= cols) on one white sheet, 2 px apart."""
    sheet = np.full((len(rows) * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = tile
    return sheet


def save_strip(path: Path, *sets: np.ndarray, zoom: int = 3) -> None:
    """One PNG, each tile ``zoom`` times its size (nearest neighbour), 16 to a row. Sets
    of equal length interleave (a row of the first, the same images' row of each next
    set below: inputs, then their outputs); else each set's rows follow the last's, a
    blank row between."""
    _, h, w, _ = next(s for s in sets if len(s)).shape
    cols = 16

    def chunks(tiles: np.ndarray) -> list[np.ndarray]:
        return [tiles[k : k + cols] for k in range(0, len(tiles), cols)]

    rows: list[np.ndarray] = []
    if len({len(s) for s in sets}) == 1:
        rows = [r for group in zip(*map(chunks, sets), strict=True) for r in group]
    else:
        for k, tiles in enumerate(sets):
            rows += [sets[0][:0]] * (k > 0) + chunks(tiles)
    sheet = _tile_rows(rows, h, w, cols)
    big = Image.fromarray(sheet).resize(
        (sheet.shape[1] * zoom, sheet.shape[0] * zoom), Image.Resampling.NEAREST
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    big.save(path)


def _share(flags: np.ndarray) -> float:
    return round(float(np.mean(flags)), 3) if len(flags) else float("nan")


def _grain_columns(pixels: np.ndarray, ok: np.ndarray) -> dict[str, float]:
    """Every table's grain columns: the share of outputs (uint8, (N, H, W, 3)) above
    GRAIN_LIMIT, and the share in distribution and not grainy."""
    grainy = (grain(from_uint8(pixels)) > GRAIN_LIMIT).numpy()
    return {"grainy": _share(grainy), "in_distribution_not_grainy": _share(ok & ~grainy)}


def _held_out(gen: Any, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = gen.generate(seed, count)
    return images, gen.label_array(labels)


def _examples(gen: Any) -> tuple[np.ndarray, np.ndarray]:
    from worker.training.examples import EXAMPLES, example_labels, file_name

    if gen.__name__ != "worker.training.aligned":
        return np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0, len(gen.FACTORS)), np.int64)
    images = np.stack([
        np.asarray(Image.open(ROOT / "examples" / file_name(n)).convert("RGB")) for n in EXAMPLES
    ])  # fmt: skip
    return images, gen.label_array([example_labels(n) for n in EXAMPLES])


def eval_reconstruct(b: Bench, images: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    outs = b.run([b.payload("reconstruct", {"image": i}) for i in b.put(images)])
    pixels = b.images(outs)
    labels, ok = b.judge(outs, pixels)
    return {"images": len(images), "in_distribution": _share(ok), **_grain_columns(pixels, ok),
            "keeps_every_factor": _share(np.all(labels == y, axis=1))}  # fmt: skip


def _differing_pairs(gen: Any, count: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    c_img, s_img, c_lab, s_lab = [], [], [], []
    for _ in range(count):
        a = [int(rng.integers(len(v))) for v in gen.FACTORS.values()]
        bvals = [(x + 1 + int(rng.integers(len(v) - 1))) % len(v)
                 for x, v in zip(a, gen.FACTORS.values(), strict=True)]  # fmt: skip
        c_img.append(gen.render(gen.Labels(*a), rng))
        s_img.append(gen.render(gen.Labels(*bvals), rng))
        c_lab.append(gen.Labels(*a))
        s_lab.append(gen.Labels(*bvals))
    return (np.stack(c_img), np.stack(s_img), gen.label_array(c_lab), gen.label_array(s_lab))


def eval_inject(b: Bench, pairs: int) -> dict[str, Any]:
    gen = b.gen
    content, style, c_lab, s_lab = _differing_pairs(gen, pairs, HELD_OUT_SEED + 7)
    c_ids, s_ids = b.put(content), b.put(style)
    outs = b.run([b.payload("inject", {"content": c, "style": s}, seed=i)
                  for i, (c, s) in enumerate(zip(c_ids, s_ids, strict=True))])  # fmt: skip
    outputs = b.images(outs)
    labels, ok = b.judge(outs, outputs)
    if b.save_dir is not None:  # rows of contents, their styles, their outputs
        save_strip(b.save_dir / "inject.png", content, style, outputs)
    cols = list(gen.FACTORS)
    keeps = np.all([labels[:, cols.index(f)] == c_lab[:, cols.index(f)]
                    for f in gen.CONTENT_FACTORS], axis=0)  # fmt: skip
    takes = np.all([labels[:, cols.index(f)] == s_lab[:, cols.index(f)]
                    for f in gen.STYLE_FACTORS], axis=0)  # fmt: skip
    row: dict[str, Any] = {"pairs": pairs, "in_distribution": _share(ok),
                           **_grain_columns(outputs, ok)}  # fmt: skip
    for f in cols:
        src = c_lab if f in gen.CONTENT_FACTORS else s_lab
        row[f"{'keeps' if f in gen.CONTENT_FACTORS else 'takes'}_{f}"] = _share(
            labels[:, cols.index(f)] == src[:, cols.index(f)]
        )
    row.update(keeps_content=_share(keeps), takes_style=_share(takes), both=_share(keeps & takes))
    if hasattr(gen, "COLOURS") and "size" in cols:
        row["where_the_colour_is_taken"] = _colour_by_overlap(
            gen, outputs, content, style, c_lab, s_lab
        )
        col, size = cols.index("colour"), cols.index("size")
        taken = labels[:, col] == s_lab[:, col]
        larger = c_lab[:, size] > s_lab[:, size]
        row["takes_colour_when_the_content_is_larger"] = _share(taken[larger])
        row["takes_colour_when_the_content_is_smaller"] = _share(taken[~larger])
        names = gen.FACTORS["colour"]
        row["takes_colour_by_the_style_colour"] = {
            names[k]: _share(taken[s_lab[:, col] == k]) for k in range(len(names))
        }
        read = labels[~taken, col]
        row["colour_misses"] = {  # the rest of the misses read as a third colour
            "misses": len(read),
            "the_content_colour": int((read == c_lab[~taken, col]).sum()),
            "read_as": {names[k]: int((read == k).sum()) for k in range(len(names))},
        }
    return row


def _object_pixels(gen: Any, images: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: the pixels nearer the image's object colour than its background's."""
    cols = list(gen.FACTORS)
    fg = np.array(list(gen.COLOURS.values()), np.float32)[lab[:, cols.index("colour")]]
    bg = np.array(list(gen.BACKGROUNDS.values()), np.float32)[lab[:, cols.index("background")]]
    x = images.astype(np.float32)
    to_fg = np.linalg.norm(x - fg[:, None, None], axis=-1)
    to_bg = np.linalg.norm(x - bg[:, None, None], axis=-1)
    nearer: np.ndarray = to_fg < to_bg
    return nearer


def _colour_by_overlap(
    gen: Any, outputs: np.ndarray, content: np.ndarray, style: np.ndarray,
    c_lab: np.ndarray, s_lab: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    """Which colour the output shows on the content's object pixels, split by whether
    the style image's object covers the pixel too: the share of those pixels whose
    nearest palette colour (objects' and backgrounds') is the style's object colour,
    the content's object colour, or a background colour."""
    cols = list(gen.FACTORS)
    palette = np.array([*gen.COLOURS.values(), *gen.BACKGROUNDS.values()], np.float32)
    nearest = np.argmin(
        np.linalg.norm(outputs.astype(np.float32)[..., None, :] - palette, axis=-1), axis=-1
    )
    n_colours = len(gen.COLOURS)
    style_c = s_lab[:, cols.index("colour")][:, None, None]
    content_c = c_lab[:, cols.index("colour")][:, None, None]
    in_content = _object_pixels(gen, content, c_lab)
    in_style = _object_pixels(gen, style, s_lab)
    out: dict[str, Any] = {}
    for name, where in (("inside_the_style_object", in_content & in_style),
                        ("outside_the_style_object", in_content & ~in_style)):  # fmt: skip
        count = int(where.sum())
        out[name] = {
            "pixels": count,
            "style_colour": _share((nearest == style_c)[where]),
            "content_colour": _share((nearest == content_c)[where]),
            "a_background": _share((nearest >= n_colours)[where]),
        }
    return out


def eval_edit_by_target(
    b: Bench, method: str, fit_method: str, images: np.ndarray, y: np.ndarray, count: int,
    fit_params: dict[str, Any], factors: list[str] | None = None,
    project_out: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A fit per target, then the edit on held-out images lacking the value.

    ``project_out`` (directions): the other factors named there are fitted first, to
    their own targets with the same parameters, and the target's fit removes their
    directions (the fit's ``project_out``)."""
    gen, cols = b.gen, list(b.gen.FACTORS)
    out: dict[str, Any] = {}
    plain: dict[str, str] = {}  # project_out's fits, each made once for every target
    for factor in factors or cols:
        value = TARGETS[factor]
        j, v = cols.index(factor), gen.FACTORS[factor].index(value)
        params = dict(fit_params)
        removed = [f for f in project_out or [] if f != factor]
        for f in removed:
            if f not in plain:
                plain[f] = b.fit(fit_method, factor=f, value=TARGETS[f], **fit_params)[0]
        if removed:
            params["project_out"] = [plain[f] for f in removed]
        start = time.perf_counter()
        asset, fitted = b.fit(fit_method, factor=factor, value=value, **params)
        fit_s = time.perf_counter() - start
        pick = np.flatnonzero(y[:, j] != v)[:count]
        ids = b.put(images[pick])
        outs = b.run([b.payload(method, {"image": i}, seed=k, asset=asset)
                      for k, i in enumerate(ids)])  # fmt: skip
        pixels = b.images(outs)
        labels, ok = b.judge(outs, pixels)
        others = [k for k in range(len(cols)) if k != j]
        success = labels[:, j] == v
        kept = np.all(labels[:, others] == y[pick][:, others], axis=1)
        row: dict[str, Any] = {
            "images": len(pick), "success": _share(success), "preservation": _share(kept),
            "both": _share(success & kept), "in_distribution": _share(ok),
            **_grain_columns(pixels, ok), "fit_seconds": round(fit_s, 1),
        }  # fmt: skip
        row["changed"] = {cols[k]: _share(labels[:, k] != y[pick][:, k]) for k in others}
        names = gen.FACTORS[factor]
        row["success_by_own_value"] = {  # the image's own value of the factor edited
            names[k]: _share(success[y[pick][:, j] == k])
            for k in range(len(names))
            if k != v and (y[pick][:, j] == k).any()
        }
        if b.save_dir is not None:
            save_strip(b.save_dir / f"{method}-{factor}={value}.png", images[pick], pixels)
        fit_figures = ("t0", "balanced_accuracy_x", "balanced_accuracy_h", "majority_baseline")
        row.update({k: fitted.metrics[k] for k in fit_figures if k in fitted.metrics})
        out[f"{factor}={value}"] = row
        print(f"{method} {factor}={value}:", json.dumps(row), flush=True)
    return out


def eval_style(
    b: Bench, count: int, style_images: int, prompted: bool = False, first_seed: int = 0
) -> dict[str, Any]:
    """A style fitted from images sharing colour and background, then ``count`` samples
    (seeds from ``first_seed``; prompts drawn from it too).
    ``prompted`` (a text model): each sample's prompt names a random shape, size and
    aspect and no style factor, so the style has to come from the start; ``keeps_prompt``
    is the share whose every content factor is the prompt's."""
    gen = b.gen
    out = {}
    cols = list(gen.FACTORS)
    content = [cols.index(f) for f in gen.CONTENT_FACTORS]
    for colour, background in STYLES:
        rng = np.random.default_rng(HELD_OUT_SEED + 11)
        style = {"colour": gen.FACTORS["colour"].index(colour),
                 "background": gen.FACTORS["background"].index(background)}  # fmt: skip
        images = []
        for _ in range(style_images):
            values = {f: style.get(f, int(rng.integers(len(v)))) for f, v in gen.FACTORS.items()}
            images.append(gen.render(gen.Labels(**values), rng))
        asset, _ = b.fit("style-noise", images=b.put(np.stack(images)))
        # prompts: from 0 on, the draw goes on from the style images'; else a draw of its own
        ask = rng if first_seed == 0 else np.random.default_rng(HELD_OUT_SEED + 13 + first_seed)
        asked = [gen.random_labels(ask) for _ in range(count)] if prompted else []
        prompts = [lab.caption(frozenset(gen.CONTENT_FACTORS)) for lab in asked]
        outs = b.run([
            b.payload("style-generate", seed=first_seed + k, asset=asset,
                      **({"prompt": prompts[k]} if prompted else {}))
            for k in range(count)
        ])  # fmt: skip
        pictures = b.images(outs)
        labels, ok = b.judge(outs, pictures)
        col = labels[:, cols.index("colour")] == style["colour"]
        bg = labels[:, cols.index("background")] == style["background"]
        row = {
            "samples": count, "takes_colour": _share(col), "takes_background": _share(bg),
            "takes_both": _share(col & bg), "in_distribution": _share(ok),
            **_grain_columns(pictures, ok),
        }  # fmt: skip
        if prompted:
            wanted = gen.label_array(asked)[:, content]
            row["keeps_prompt"] = _share(np.all(labels[:, content] == wanted, axis=1))
            row["example_prompt"] = prompts[0]
        out[f"{colour} on {background}"] = row
        print("style-generate", colour, background, json.dumps(row), flush=True)
        if b.save_dir is not None:  # top: the samples in distribution, below: the others
            name = f"style-generate{'-text' if prompted else ''}-{colour}-on-{background}"
            save_strip(b.save_dir / f"{name}.png", pictures[ok], pictures[~ok])
            for k in np.flatnonzero(~ok):
                print("  not in distribution:", first_seed + k, prompts[k] if prompted else "")
    return out


def neutral_images(dn: Denoiser, asset: LamAsset, seeds: range) -> torch.Tensor:
    """The neutral prompt's image of each seed, in [-1, 1], as a mix with ``asset`` (its
    grid, prompts, guidance, sampler, clip_x0 and eta; its lam is not used) draws it with
    lam = 1 at every step: the image the mix is compared with."""
    from worker.engine.methods.mixing import sample_mixed
    from worker.methods.mixing import seed_noises

    n = len(asset.grid)
    c_n, c_t = dn.encode_prompt([asset.neutral]), dn.encode_prompt([asset.target])
    uncond = dn.encode_prompt([""]) if asset.guidance_scale != 1.0 else None
    outs = []
    for seed in seeds:
        x_T, noises = seed_noises(dn, range(seed, seed + 1), n if asset.eta > 0 else 0)
        with torch.no_grad():
            x0 = sample_mixed(dn, x_T, asset.grid, c_n, c_t, torch.ones(n), uncond=uncond,
                              guidance=asset.guidance_scale, sampler=asset.sampler,
                              clip_x0=asset.clip_x0, eta=asset.eta,
                              noises=noises or None)  # fmt: skip
        outs.append(dn.decode(x0))
    return torch.cat(outs)


def _lam_summary(lam: torch.Tensor) -> dict[str, Any]:
    """The fitted lam: its values (rounded) and the first step where it falls below 0.5."""
    below = torch.nonzero(lam < 0.5)
    return {
        "switch": int(below[0]) if len(below) else len(lam),
        "values": [round(float(v), 3) for v in lam.float()],
    }


def eval_mix(
    b: Bench, others: int, factors: list[str] | None = None, first: int = 100
) -> dict[str, Any]:
    gen, cols = b.gen, list(b.gen.FACTORS)
    out = {}
    for neutral, target, factor, value in MIX_TASKS:
        if factors and factor not in factors:
            continue
        j, v = cols.index(factor), gen.FACTORS[factor].index(value)
        asset, fitted = b.fit("lam", neutral=neutral, target=target)
        assert fitted.asset is not None
        seeds = range(first, first + others)
        outs = b.run([b.payload("mix", seed=s, asset=asset) for s in seeds])
        pixels = b.images(outs)
        labels, ok = b.judge(outs, pixels)
        lam_asset = LamAsset.from_safetensors(fitted.asset.data)
        plain_x = neutral_images(b.dn, lam_asset, seeds)
        plain, plain_ok = b.judge_tensor(plain_x)
        rest = [k for k in range(len(cols)) if k != j]
        success = labels[:, j] == v
        kept = np.all(labels[:, rest] == plain[:, rest], axis=1)
        valid = ok & plain_ok  # the judge's reading is one to trust on both images
        out[f"{factor}={value}"] = {
            "seeds": others, "neutral_has_value": _share(plain[:, j] == v),
            "success": _share(success), "preservation": _share(kept),
            "in_distribution": _share(ok), "neutral_in_distribution": _share(plain_ok),
            **_grain_columns(pixels, ok),
            "neutral_grainy": _share((grain(plain_x) > GRAIN_LIMIT).numpy()),
            "kept": {cols[k]: _share(labels[:, k] == plain[:, k]) for k in rest},
            "both_in_distribution": _share(valid),
            "preservation_where_both_in_distribution": _share(kept[valid]),
            "loss_first_last": [fitted.metrics["loss_first"], fitted.metrics["loss_last"]],
            "lam": _lam_summary(lam_asset.lam),
        }  # fmt: skip
        print("mix", factor, value, json.dumps(out[f"{factor}={value}"]), flush=True)
        if b.save_dir is not None:  # rows: the neutral images, then the mixes, seed by seed
            plain_pixels = np.stack([np.asarray(im) for im in to_pil(plain_x)])
            save_strip(b.save_dir / f"mix-{factor}-{value}.png", plain_pixels, pixels)
    return out


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["direction.scale=2", "inject.g=0.6"]`` as {method: {param: value}}; each value
    JSON (a bare word is taken as a string)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, param = key.rpartition(".")
        if not (sep and dot) or method not in METHODS:
            raise SystemExit(f"--set {item!r}: expected METHOD.PARAM=VALUE, METHOD one of "
                             f"{sorted(METHODS)}")  # fmt: skip
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(method, {})[param] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=str(ROOT / "models" / "shapes32-ddpm"))
    p.add_argument("--text-model", default="")
    p.add_argument("--classifier", default=str(ROOT / "models" / "shapes32-classifier"))
    p.add_argument("--text-classifier", default="", help="default: --classifier")
    choices = ["reconstruct", "inject", "direction", "boundary-edit", "style-generate", "mix"]
    p.add_argument("--only", nargs="+", choices=choices, default=choices[:5])
    p.add_argument("--images", type=int, default=64, help="held-out images (and samples)")
    p.add_argument("--pairs", type=int, default=64, help="inject: held-out pairs")
    p.add_argument("--count", type=int, default=32, help="direction/boundary: images per target")
    p.add_argument("--factors", nargs="+", help="direction/boundary-edit/mix: these targets only")
    p.add_argument("--mix-seeds", type=int, default=32, help="mix: seeds 100.. it is run on")
    p.add_argument(
        "--mix-first-seed", type=int, default=100,
        help="mix: the first of --mix-seeds seeds (the fits use seeds 1..4), e.g. to check a "
        "default on seeds its sweep did not see",
    )  # fmt: skip
    p.add_argument(
        "--project-out", nargs="+", metavar="FACTOR",
        help="direction: fit these factors' targets first and remove their directions",
    )  # fmt: skip
    p.add_argument(
        "--set", nargs="+", default=[], metavar="METHOD.PARAM=JSON",
        help="a request's own value, e.g. direction.scale=2 (to sweep a default)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--text-only", action="store_true", help="style-generate: the text model's run only"
    )
    p.add_argument(
        "--first-seed", type=int, default=0,
        help="style-generate: samples' seeds (and prompts) from this one, e.g. to measure a "
        "default on samples its sweep did not see",
    )  # fmt: skip
    p.add_argument(
        "--save",
        type=Path,
        help="inject, direction, boundary-edit, style-generate, mix: PNGs, here",
    )
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"model": args.model}
    with tempfile.TemporaryDirectory(prefix="editserve-defaults-") as tmp:
        dn = load_denoiser(args.model, name="shapes32", device="cpu", dtype="float32")
        clf = AttributeClassifier.load(args.classifier)
        b = Bench(dn, clf, model_domain(args.model), Path(tmp) / "blobs", overrides)
        b.save_dir = args.save
        results["editing_defaults"] = dn.editing_defaults
        results["set"] = overrides
        ex, ex_y = _examples(b.gen)
        held, held_y = _held_out(b.gen, args.images, HELD_OUT_SEED)
        images, y = np.concatenate([ex, held]), np.concatenate([ex_y, held_y])
        if "reconstruct" in args.only:
            results["reconstruct"] = eval_reconstruct(b, images, y)
            print("reconstruct:", json.dumps(results["reconstruct"]), flush=True)
        if "inject" in args.only:
            results["inject"] = eval_inject(b, args.pairs)
            print("inject:", json.dumps(results["inject"]), flush=True)
        many, many_y = _held_out(b.gen, 8 * args.count, HELD_OUT_SEED + 1)
        if "direction" in args.only:
            results["direction"] = eval_edit_by_target(
                b,
                "direction",
                "directions",
                many,
                many_y,
                args.count,
                {"kind": "supervised"},
                args.factors,
                args.project_out,
            )
        if "boundary-edit" in args.only:
            results["boundary-edit"] = eval_edit_by_target(
                b, "boundary-edit", "boundary", many, many_y, args.count, {}, args.factors
            )
        if "style-generate" in args.only and not args.text_only:
            results["style-generate"] = eval_style(b, args.images, 8, first_seed=args.first_seed)
        if args.text_model and {"style-generate", "mix"} & set(args.only):
            tm = load_denoiser(args.text_model, name="shapes32-text", device="cpu",
                               dtype="float32")  # fmt: skip
            tclf = AttributeClassifier.load(args.text_classifier or args.classifier)
            tb = Bench(tm, tclf, model_domain(args.text_model), Path(tmp) / "tb", overrides)
            tb.save_dir = args.save
            if "style-generate" in args.only:
                results["style-generate-text"] = eval_style(
                    tb, args.images, 8, prompted=True, first_seed=args.first_seed
                )
            if "mix" in args.only:
                results["mix"] = eval_mix(tb, args.mix_seeds, args.factors, args.mix_first_seed)
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
