"""Process state: the allocator option works when asked for and is never touched otherwise."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from sfumato.runtime import memory


@pytest.mark.skipif(not memory.is_supported(), reason="glibc only")
def test_keep_freed_memory_keeps_blocks_below_64_mib_and_returns_bigger_ones() -> None:
    # In a child process: the setting is process-wide. RSS after freeing a 48 MiB tensor (above
    # glibc's own 32 MiB mmap ceiling) shows whether the block was kept; a 128 MiB one must go back
    # either way, since big blocks kept in the heap fragment it (a higher peak at 512 px).
    script = textwrap.dedent(
        """
        import sys, torch
        from sfumato.runtime import memory
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
        if sys.argv[1] == "on":
            assert memory.keep_freed_memory() is True
        before = rss()
        x = torch.ones(12 * 2**20)  # 48 MiB, touched
        del x
        kept = rss() - before
        y = torch.ones(32 * 2**20)  # 128 MiB
        del y
        kept_big = rss() - before - kept
        if sys.argv[1] == "on":
            memory.keep_freed_memory(False)  # back to glibc's defaults, and trimmed
        print(kept, kept_big, rss() - before)
        """
    )
    results = {}
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
        results[mode] = [int(v) for v in out.stdout.split()]
    assert results["off"][0] < 16 * 2**20  # freed at once
    assert results["on"][0] > 40 * 2**20  # kept for reuse
    assert results["on"][1] < 16 * 2**20  # 128 MiB: its own mapping, returned when freed
    assert results["on"][2] < 16 * 2**20  # given back after turning it off


def test_generating_changes_no_process_state(monkeypatch, sd_folder) -> None:
    """Neither loading nor generating touches the allocator or the thread count on its own."""
    from sfumato import StableDiffusionPipeline

    calls = []
    monkeypatch.setattr(memory, "_glibc", lambda: calls.append("libc") or None)
    threads = torch.get_num_threads()
    interop = torch.get_num_interop_threads()
    grad = torch.is_grad_enabled()
    pipe = StableDiffusionPipeline.from_pretrained(sd_folder)
    pipe.set_progress_bar_config(disable=True)
    pipe("a cat", num_inference_steps=2)
    assert calls == []
    assert (torch.get_num_threads(), torch.get_num_interop_threads(), torch.is_grad_enabled()) == (
        threads, interop, grad,
    )  # fmt: skip
