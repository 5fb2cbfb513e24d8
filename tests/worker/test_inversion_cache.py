from __future__ import annotations

from pathlib import Path

import torch

from worker.engine import Denoiser
from worker.engine.reconstruct import Inversion, invert, regenerate
from worker.inversion_cache import InversionCache, InversionKey


def _inv(seed: int, n: int = 1) -> Inversion:
    g = torch.Generator().manual_seed(seed)
    return Inversion("ddim", [0, 500], torch.randn(n, 3, 8, 8, generator=g))


def test_lru_evicts_by_bytes_and_counts_hits() -> None:
    one = _inv(0).nbytes
    cache = InversionCache(max_bytes=2 * one)
    keys = [InversionKey("m", f"img{i}", "ddim", 2, "leading") for i in range(3)]
    cache.put(keys[0], _inv(0))
    cache.put(keys[1], _inv(1))
    assert cache.get(keys[0]) is not None  # keys[0] is now the most recent
    cache.put(keys[2], _inv(2))  # evicts keys[1], the least recent
    assert cache.get(keys[1]) is None and cache.get(keys[2]) is not None
    assert len(cache) == 2 and cache.nbytes == 2 * one
    assert (cache.hits, cache.misses) == (2, 1)


def test_rows_and_stack_round_trip() -> None:
    inv = Inversion("ddpm", [0, 1], torch.randn(3, 2), [torch.randn(3, 2), torch.randn(3, 2)], 1.0)
    back = Inversion.stack(inv.rows())
    assert torch.equal(back.x_T, inv.x_T)
    assert back.zs is not None and inv.zs is not None
    assert all(torch.equal(a, b) for a, b in zip(back.zs, inv.zs, strict=True))


def test_regenerating_from_a_cached_inversion_equals_the_full_round_trip(pixel: Denoiser) -> None:
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    inv = invert(pixel, images, steps=6, inversion="ddpm", generator=gens, refine=0)
    cache = InversionCache()
    key = InversionKey("tiny", "a", "ddpm", 6, "leading", seed=1)
    cache.put(key, inv.rows()[0])
    cached = cache.get(key)
    assert cached is not None
    # batch of 2 vs batch of 1 on a random-weight net: see test_sampling for the 1e-3
    torch.testing.assert_close(
        regenerate(pixel, cached), regenerate(pixel, inv)[:1], rtol=1e-3, atol=1e-3
    )


def test_a_second_process_finds_the_inversion_on_disk(tmp_path: Path) -> None:
    key = InversionKey("m", "img", "ddpm", 2, "leading", seed=3)
    inv = Inversion("ddpm", [0, 500], torch.randn(1, 3, 4, 4), [torch.randn(1, 3, 4, 4)] * 2, 1.0)
    InversionCache(folder=tmp_path).put(key, inv)
    other = InversionCache(folder=tmp_path)  # as another worker would
    found = other.get(key)
    assert found is not None and found.kind == "ddpm" and found.grid == [0, 500]
    assert torch.equal(found.x_T, inv.x_T) and found.zs is not None and len(found.zs) == 2
    assert other.get(InversionKey("m", "img", "ddpm", 2, "leading", seed=4)) is None


def test_a_read_refreshes_the_files_time_for_retention(tmp_path: Path) -> None:
    import os

    key = InversionKey("m", "img", "ddim", 2, "leading")
    writer = InversionCache(folder=tmp_path)
    writer.put(key, _inv(0))
    (path,) = tmp_path.glob("*/*.safetensors")
    os.utime(path, (1_000_000, 1_000_000))
    assert InversionCache(folder=tmp_path).get(key) is not None  # a disk hit
    assert path.stat().st_mtime > 1_000_000
    os.utime(path, (1_000_000, 1_000_000))
    assert writer.get(key) is not None  # a memory hit
    assert path.stat().st_mtime > 1_000_000
