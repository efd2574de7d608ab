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


def peak_growth(body: str) -> int:
    """Peak RSS growth (bytes) while a child process runs `body`, after its `setup` lines.

    Sampled by a thread: the kernel's ru_maxrss high-water mark lags behind madvise.
    """
    import subprocess
    import textwrap

    setup, _, run = textwrap.dedent(body).partition("# run\n")
    script = textwrap.dedent(
        """
        import threading, time, torch
        from pathlib import Path
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
        peak, done = [0], threading.Event()
        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.0005)
        """
    )
    script += setup + "before = rss()\nsampler = threading.Thread(target=sample)\nsampler.start()\n"
    script += run + "done.set()\nsampler.join()\nprint(peak[0] - before)\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def save_fp32_weights(folder) -> None:
    tensors = {f"w{i}": torch.randn(8 * 2**20, generator=torch.Generator().manual_seed(i)) for i in range(8)}
    save_file(tensors, folder / "model.safetensors")  # 256 MiB of fp32 -> 128 MiB as bf16


def test_loading_fp32_files_as_bf16_keeps_one_copy_resident(tmp_path) -> None:
    save_fp32_weights(tmp_path)
    growth = peak_growth(
        f"""
        from sfumato.checkpoint import WeightFiles, load_state_dict
        # run
        sd = load_state_dict(WeightFiles(Path({str(tmp_path)!r}), ("model.safetensors",)), dtype=torch.bfloat16)
        assert all(t.dtype == torch.bfloat16 for t in sd.values())
        """
    )
    assert growth < 200 * 2**20, f"peak grew by {growth / 2**20:.0f} MiB for 128 MiB of bf16 weights"


def test_casting_mmapped_fp32_weights_to_bf16_keeps_one_copy_resident(tmp_path) -> None:
    """`pipe.to(torch.bfloat16)` / `model.to(...)` after an fp32 load: the file's pages go as the copies come."""
    save_fp32_weights(tmp_path)
    growth = peak_growth(
        f"""
        from sfumato.checkpoint import WeightFiles, load_state_dict
        from sfumato.runtime.pages import cast_in_place
        sd = load_state_dict(WeightFiles(Path({str(tmp_path)!r}), ("model.safetensors",)))
        module = torch.nn.Module()
        for name, t in sd.items():
            module.register_parameter(name, torch.nn.Parameter(t, requires_grad=False))
        del sd, t  # the module's parameters are the file's only users; its pages are read by the cast
        # run
        assert cast_in_place(module, (torch.bfloat16,), {{}})
        assert all(p.dtype == torch.bfloat16 for p in module.parameters())
        """
    )
    assert growth < 200 * 2**20, f"peak grew by {growth / 2**20:.0f} MiB for 128 MiB of bf16 weights"


def test_cast_in_place_acts_like_module_to() -> None:
    from sfumato.runtime.pages import cast_in_place

    def build():
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 4))
        m[2].weight = m[0].weight  # tied
        m(torch.randn(3, 4)).sum().backward()  # gradients to cast too
        return m

    ours, theirs = build(), build().to(torch.bfloat16)
    assert cast_in_place(ours, (torch.bfloat16,), {})
    assert ours[2].weight is ours[0].weight
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert ours[0].weight.grad.dtype == torch.bfloat16
    assert ours[1].num_batches_tracked.dtype == torch.int64  # integers stay
    # anything but a CPU dtype cast is left to nn.Module.to
    assert not cast_in_place(ours, ("cpu",), {})
    assert not cast_in_place(ours, (torch.float32,), {"memory_format": torch.channels_last})
    assert not cast_in_place(ours, ("meta", torch.float32), {})


def test_populate_maps_a_mapped_weight_in_one_call_and_leaves_heap_tensors_alone(tmp_path) -> None:
    from sfumato.runtime.pages import file_mappings, populate

    path = tmp_path / "w.safetensors"
    weight = torch.randn(8 * 2**20, generator=torch.Generator().manual_seed(0))  # 32 MiB
    save_file({"w": weight}, path)
    with safe_open(path, framework="pt") as f:
        mapped = f.get_tensor("w")
        drop_pages([mapped])  # start from no resident pages, whatever the page cache holds
        before = rss()
        if not populate(mapped, file_mappings()):
            pytest.skip("kernel without MADV_POPULATE_READ (Linux < 5.14)")
        assert rss() - before > 28 * 2**20  # resident without being read
        assert torch.equal(mapped, weight)
    assert not populate(weight, file_mappings())  # heap memory: nothing to map
