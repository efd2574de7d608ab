"""Dropping the pages of converted memory-mapped weights: memory goes back, values never change."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sfumato.runtime.pages import drop_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only (madvise, /proc)")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_mmapped_pages_are_given_back_and_reread_unchanged(tmp_path) -> None:
    path = tmp_path / "w.safetensors"
    weight = torch.randn(16 * 2**20, generator=torch.Generator().manual_seed(0))  # 64 MiB
    save_file({"w": weight}, path)
    expected = float(weight.double().sum())
    del weight
    with safe_open(path, framework="pt") as f:
        mapped = f.get_tensor("w")
        assert float(mapped.double().sum()) == expected  # touches every page
        before = rss()
        dropped = drop_pages([mapped])
        assert dropped > 60 * 2**20
        assert before - rss() > 50 * 2**20
        assert float(mapped.double().sum()) == expected  # faulted back in from the file


def test_heap_tensors_and_written_tensors_are_never_touched(tmp_path) -> None:
    heap = torch.randn(4 * 2**20)
    copy = heap.clone()
    assert drop_pages([heap]) == 0
    assert torch.equal(heap, copy)
    save_file({"w": torch.zeros(4 * 2**20)}, tmp_path / "w.safetensors")
    with safe_open(tmp_path / "w.safetensors", framework="pt") as f:
        mapped = f.get_tensor("w")
        mapped.add_(1.0)  # a private copy of the pages now holds data the file does not
        assert drop_pages([mapped]) == 0
        assert bool((mapped == 1.0).all())
