"""Packed weights kept on disk: a later model maps them instead of packing, with the same values bit for bit."""

from __future__ import annotations

import io
import logging
import os
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fixtures.cpus import ZEN3, fake_cpu
from sfumato.runtime import packed_cache
from sfumato.runtime.packed_cache import PackedCache, available, clear, from_option
from sfumato.runtime.packing import PackedConv2d, PackedLinear, mkldnn_packing_available, pack_weights

pytestmark = pytest.mark.skipif(
    not (mkldnn_packing_available() and available()), reason="needs x86 torch with oneDNN and its AOTI C API"
)


@pytest.fixture(autouse=True)
def every_float32_weight_packs(monkeypatch):
    fake_cpu(monkeypatch, ZEN3)  # AMD's rule: every float32 convolution and linear packs


def build() -> nn.Module:
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 36, 32))


def save_model(path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    save_file(build().state_dict(), path)


def mapped_model(path) -> nn.Module:
    """The model with its weights used in place from the file's mmap, as `from_pretrained` loads them."""
    model = build()
    model.load_state_dict(load_file(path), assign=True)
    return model


def cached_model(tmp_path, cache: PackedCache | None = None) -> nn.Module:
    """The saved model mapped from its file, packing through `cache` (by default the test's folder)."""
    model = mapped_model(tmp_path / "m.safetensors")
    pack_weights(model, "neutral", cache=cache or PackedCache(tmp_path / "cache"))
    return model


def fill(tmp_path) -> torch.Tensor:
    """Save the model and run it once through the cache, which writes its entries; returns the output."""
    save_model(tmp_path / "m.safetensors")
    with torch.no_grad():
        return cached_model(tmp_path)(X)


def entries(folder) -> list:
    return sorted(folder.glob("*.packed"))


@pytest.fixture
def pack_calls(monkeypatch) -> list[str]:
    """The modules that packed a weight themselves while the test runs (cache misses)."""
    calls: list[str] = []
    for cls in (PackedConv2d, PackedLinear):
        original = cls._pack

        def counting(self, weight, shape_key, original=original):
            calls.append(type(self).__name__)
            return original(self, weight, shape_key)

        monkeypatch.setattr(cls, "_pack", counting)
    return calls


X = torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(1))


def test_a_second_model_maps_the_packed_weights_with_the_same_values(tmp_path, pack_calls) -> None:
    save_model(tmp_path / "m.safetensors")
    folder = tmp_path / "cache"
    no_cache = mapped_model(tmp_path / "m.safetensors")
    first, second = (mapped_model(tmp_path / "m.safetensors") for _ in range(2))
    pack_weights(no_cache, "neutral")
    pack_weights(first, "neutral", cache=PackedCache(folder))
    pack_weights(second, "neutral", cache=PackedCache(folder))  # another process's cache object
    with torch.no_grad():
        expected = no_cache(X)
        assert torch.equal(first(X), expected)
        assert len(pack_calls) == 4 and len(entries(folder)) == 2  # packed, and written
        assert torch.equal(second(X), expected)  # the same bytes oneDNN wrote: bit for bit
        assert len(pack_calls) == 4  # mapped, not packed again
        assert torch.equal(second(X), expected)
    assert second[0]._sfumato_pack_pages and not first[0]._sfumato_pack_pages


def test_entries_follow_the_input_shape_and_the_weight_file(tmp_path, pack_calls) -> None:
    path, folder = tmp_path / "m.safetensors", tmp_path / "cache"
    save_model(path)
    model = mapped_model(path)
    pack_weights(model, "neutral", cache=PackedCache(folder))
    conv = model[0]
    with torch.no_grad():
        for size in (6, 10, 6):  # each shape its own entry; going back maps the first one again
            x = torch.randn(2, 8, size, size)
            assert (conv(x) - nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)).abs().max() < 1e-5
    assert len(entries(folder)) == 2 and pack_calls == ["PackedConv2d"] * 2
    cache = conv._sfumato_cache
    with torch.no_grad():
        for size in (6, 10) * 20:  # a server alternating sizes: each entry mapped once, not per switch
            x = torch.randn(2, 8, size, size)
            assert (conv(x) - nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)).abs().max() < 1e-5
    assert len(cache._maps) == 2 and pack_calls == ["PackedConv2d"] * 2
    save_model(path, seed=5)  # new weights in the same file: a new identity, never the old packing
    changed = mapped_model(path)
    plain = mapped_model(path)
    pack_weights(changed, "neutral", cache=PackedCache(folder))
    with torch.no_grad():
        assert (changed(X) - plain(X)).abs().max() < 1e-5
    assert len(entries(folder)) == 4


def test_a_process_maps_a_bounded_number_of_entries_then_packs_as_usual(tmp_path, pack_calls, caplog) -> None:
    expected = fill(tmp_path)
    cache = PackedCache(tmp_path / "cache")
    cache.max_mapped = 1
    with caplog.at_level(logging.WARNING), torch.no_grad():
        assert torch.equal(cached_model(tmp_path, cache)(X), expected)
    assert len(cache._maps) == 1 and len(pack_calls) == 3  # the first entry mapped, the second packed
    assert caplog.text.count("packing the next ones as usual") == 1


def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path, pack_calls, caplog) -> None:
    expected = fill(tmp_path)
    for entry in entries(tmp_path / "cache"):  # cut each file short: its description no longer fits the bytes
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size - 4096])
    with caplog.at_level(logging.WARNING), torch.no_grad():
        assert torch.equal(cached_model(tmp_path)(X), expected)
    assert len(pack_calls) == 4  # both packed again
    assert "damaged packed-weight cache entry" in caplog.text
    with torch.no_grad():
        assert torch.equal(cached_model(tmp_path)(X), expected)
    assert len(pack_calls) == 4  # the rewritten entries serve


def test_an_entry_for_other_sizes_is_not_used(tmp_path) -> None:
    expected = fill(tmp_path)
    cache = PackedCache(tmp_path / "cache")
    key = entries(tmp_path / "cache")[0].stem
    assert cache.load(key, [[1, 2, 3, 4]], torch.float32) is None  # a header naming other sizes
    with torch.no_grad():
        assert torch.equal(cached_model(tmp_path, cache)(X), expected)


def test_weights_not_from_a_file_are_packed_but_not_cached(tmp_path) -> None:
    torch.manual_seed(0)
    model = build()
    pack_weights(model, "all", cache=PackedCache(tmp_path / "cache"))
    with torch.no_grad():
        model(X)
    assert model[0]._sfumato_pack is not None and not entries(tmp_path / "cache")


def test_an_unwritable_folder_warns_once_and_packs_as_usual(tmp_path, caplog) -> None:
    save_model(tmp_path / "m.safetensors")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    model, plain = mapped_model(tmp_path / "m.safetensors"), mapped_model(tmp_path / "m.safetensors")
    pack_weights(model, "neutral", cache=PackedCache(blocked / "cache"))
    pack_weights(plain, "neutral")
    with caplog.at_level(logging.WARNING), torch.no_grad():
        assert torch.equal(model(X), plain(X))
    assert caplog.text.count("not writing the packed-weight cache") == 1
    assert blocked.read_text() == "not a folder"


def test_the_least_recently_used_entries_go_over_the_limit(tmp_path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    for age, name in ((300, "old"), (200, "used"), (100, "new")):
        (folder / f"{name}.packed").write_bytes(b"x" * 100)
        os.utime(folder / f"{name}.packed", (time.time() - age, time.time() - age))
    PackedCache(folder, limit_bytes=250)._evict(keep="old.packed")  # the one just written stays
    assert [e.stem for e in entries(folder)] == ["new", "old"]
    PackedCache(folder, limit_bytes=150)._evict(keep="new.packed")
    assert [e.stem for e in entries(folder)] == ["new"]


def test_a_mapped_entry_counts_as_recently_used_and_a_new_one_stays(tmp_path) -> None:
    fill(tmp_path)
    folder = tmp_path / "cache"
    old = {e.name for e in entries(folder)}
    for entry in entries(folder):
        os.utime(entry, (time.time() - 1000, time.time() - 1000))
    model = cached_model(tmp_path, PackedCache(folder, limit_bytes=1))
    with torch.no_grad():
        model(X)  # mapped from the cache: used now
        assert all(time.time() - e.stat().st_mtime < 100 for e in entries(folder))
        model[0](torch.randn(2, 8, 10, 10))  # a new entry: the folder is over its limit
    left = entries(folder)
    assert len(left) == 1 and left[0].name not in old  # the new one stays, however small the limit
    with torch.no_grad():
        assert (
            model(X) - mapped_model(tmp_path / "m.safetensors")(X)
        ).abs().max() < 1e-5  # deleted, still mapped


def test_the_gated_projection_caches_both_halves(tmp_path, pack_calls) -> None:
    torch.manual_seed(0)
    save_file(nn.Linear(64, 128).state_dict(), tmp_path / "l.safetensors")

    def gated() -> nn.Linear:
        linear = nn.Linear(64, 128)
        linear.load_state_dict(load_file(tmp_path / "l.safetensors"), assign=True)
        pack_weights(linear, "neutral", exact=False, cache=PackedCache(tmp_path / "cache"))
        return linear

    x = torch.randn(3, 64)
    with torch.no_grad():
        expected = gated().forward_gated_gelu(x)
        assert torch.equal(gated().forward_gated_gelu(x), expected)
    assert len(pack_calls) == 1


def test_a_pickled_module_leaves_the_cache_behind(tmp_path) -> None:
    fill(tmp_path)
    model = cached_model(tmp_path)
    with torch.no_grad():
        expected = model(X)  # mapped from the cache
    assert model[0]._sfumato_pack_pages
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded[0]._sfumato_cache is None and loaded[0]._sfumato_pack_pages is None
    with torch.no_grad():
        assert (loaded(X) - expected).abs().max() < 1e-5


def test_the_option_and_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    packed_cache._cache_for.cache_clear()
    default = (tmp_path / "xdg" / "sfumato" / "packed").resolve()
    monkeypatch.delenv("SFUMATO_PACKED_CACHE", raising=False)
    assert from_option(None) is None and from_option(False) is None
    assert from_option(True).directory == default
    assert from_option(tmp_path / "mine").directory == (tmp_path / "mine").resolve()
    for value, expected in (
        ("", None),
        ("0", None),
        ("off", None),
        ("1", default),
        ("Yes", default),
        (str(tmp_path / "env"), tmp_path / "env"),
    ):
        monkeypatch.setenv("SFUMATO_PACKED_CACHE", value)
        cache = from_option(None)
        assert (cache.directory if cache else None) == (expected.resolve() if expected else None)
    monkeypatch.setenv("SFUMATO_PACKED_CACHE_GB", "0.5")
    assert PackedCache(tmp_path).limit_bytes == 2**29
    for wrong in ("lots", "-1", "nan"):
        monkeypatch.setenv("SFUMATO_PACKED_CACHE_GB", wrong)
        with pytest.raises(ValueError, match=r"SFUMATO_PACKED_CACHE_GB must be a size in GB .*got"):
            PackedCache(tmp_path)
    assert not (tmp_path / "xdg").exists()  # nothing written until a weight is packed


def test_clear_deletes_the_entries(tmp_path) -> None:
    fill(tmp_path)
    folder = tmp_path / "cache"
    (folder / "writing-abc.tmp").write_bytes(b"x" * 10)  # left by a process killed while writing
    total = sum(e.stat().st_size for e in entries(folder)) + 10
    (folder / "keep.txt").write_text("not ours")
    assert clear(folder) == total and not entries(folder)
    assert (folder / "keep.txt").exists() and not (folder / "writing-abc.tmp").exists()


def test_files_left_half_written_long_ago_go_when_an_entry_is_written(tmp_path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    for name, age in (("writing-old.tmp", 3600), ("writing-now.tmp", 0)):
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (time.time() - age, time.time() - age))
    fill(tmp_path)
    assert entries(folder)
    assert not (folder / "writing-old.tmp").exists()
    assert (folder / "writing-now.tmp").exists()  # another process may be writing it


def test_a_pipeline_loads_its_packed_weights_from_the_cache(
    tmp_path, sd_folder, pack_calls, monkeypatch
) -> None:
    from sfumato import StableDiffusionPipeline

    monkeypatch.delenv("SFUMATO_PACKED_CACHE", raising=False)

    def image(**options) -> torch.Tensor:
        pipe = StableDiffusionPipeline.from_pretrained(sd_folder, optimize=False).optimize(**options)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(
            "a cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt"
        )
        return out.images

    expected = image()
    packed_by_then = len(pack_calls)
    assert packed_by_then > 0
    assert torch.equal(image(packed_cache=tmp_path / "cache"), expected)
    assert len(pack_calls) == 2 * packed_by_then and entries(tmp_path / "cache")
    assert torch.equal(image(packed_cache=tmp_path / "cache"), expected)
    assert len(pack_calls) == 2 * packed_by_then  # every packed weight came from the cache


def test_a_range_since_mapped_to_another_file_is_never_taken_for_the_old_one(tmp_path) -> None:
    from sfumato.runtime.pages import FileMapping

    save_model(tmp_path / "m.safetensors")
    model = mapped_model(tmp_path / "m.safetensors")
    weight = model[2].weight
    cache = PackedCache(tmp_path / "cache")
    expected = cache.key(weight, ["linear", 2])
    assert expected is not None
    stale = [FileMapping(weight.data_ptr() - 4096, weight.data_ptr() + 2**20, 0, 1, str(tmp_path / "old"))]
    cache._files = stale  # what /proc/self/maps said before that range was unmapped and reused
    assert cache.key(weight, ["linear", 2]) == expected
    assert cache._files != stale


def test_a_weight_whose_file_was_replaced_on_disk_has_no_identity(tmp_path) -> None:
    save_model(tmp_path / "m.safetensors")
    model = mapped_model(tmp_path / "m.safetensors")
    save_model(tmp_path / "new.safetensors", seed=3)
    os.replace(
        tmp_path / "new.safetensors", tmp_path / "m.safetensors"
    )  # the mapped bytes are the old file's
    assert PackedCache(tmp_path / "cache").key(model[2].weight, ["linear", 2]) is None
