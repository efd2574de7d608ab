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


def test_loading_fp32_files_as_bf16_keeps_one_copy_resident(tmp_path) -> None:
    import subprocess
    import textwrap

    tensors = {f"w{i}": torch.randn(8 * 2**20, generator=torch.Generator().manual_seed(i)) for i in range(8)}
    save_file(tensors, tmp_path / "model.safetensors")  # 256 MiB of fp32 -> 128 MiB as bf16
    del tensors
    # peak RSS sampled by a thread (the kernel's ru_maxrss high-water mark lags behind madvise)
    script = textwrap.dedent(
        f"""
        import threading, time, torch
        from pathlib import Path
        from sfumato.checkpoint import WeightFiles, load_state_dict
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
        peak, done = [0], threading.Event()
        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.0005)
        before = rss()
        sampler = threading.Thread(target=sample)
        sampler.start()
        sd = load_state_dict(WeightFiles(Path({str(tmp_path)!r}), ("model.safetensors",)), dtype=torch.bfloat16)
        done.set()
        sampler.join()
        assert all(t.dtype == torch.bfloat16 for t in sd.values())
        print(peak[0] - before)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    growth = int(out.stdout.split()[-1])
    assert growth < 200 * 2**20, f"peak grew by {growth / 2**20:.0f} MiB for 128 MiB of bf16 weights"
