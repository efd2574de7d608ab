import json
import os

import pytest
import torch
from safetensors.torch import save_file

from sfumato import checkpoint as ckpt
from sfumato.checkpoint import CheckpointError


def _tensors(n=4, size=64):
    g = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(size, size, generator=g) for i in range(n)}


@pytest.mark.parametrize(
    ("name", "variant", "expected"),
    [
        ("diffusion_pytorch_model.safetensors", "fp16", "diffusion_pytorch_model.fp16.safetensors"),
        ("model.safetensors", "fp16", "model.fp16.safetensors"),
        (
            "diffusion_pytorch_model.safetensors.index.json",
            "fp16",
            "diffusion_pytorch_model.safetensors.index.fp16.json",
        ),
        ("model.safetensors", None, "model.safetensors"),
    ],
)
def test_variant_file_names(name, variant, expected):
    assert ckpt.add_variant(name, variant) == expected


def test_choose_prefers_safetensors_and_the_variant():
    names = [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.fp16.safetensors",
    ]
    assert ckpt.choose_weights(names) == (("diffusion_pytorch_model.safetensors",), None, False)
    assert ckpt.choose_weights(names, variant="fp16")[0] == ("diffusion_pytorch_model.fp16.safetensors",)
    index = "diffusion_pytorch_model.safetensors.index.fp16.json"
    assert ckpt.choose_weights([index], variant="fp16") == ((), index, False)
    legacy = "diffusion_pytorch_model.safetensors.fp16.index.json"
    assert ckpt.choose_weights([legacy], variant="fp16") == ((), legacy, False)
    assert ckpt.choose_weights(["model.safetensors", "pytorch_model.bin"], stem="model")[0] == (
        "model.safetensors",
    )


def test_missing_variant_lists_what_exists():
    with pytest.raises(
        CheckpointError, match=r"no 'fp16' variant.*diffusion_pytorch_model.safetensors.*Drop variant"
    ):
        ckpt.choose_weights(["diffusion_pytorch_model.safetensors"], variant="fp16")


def test_no_weights_at_all():
    with pytest.raises(CheckpointError, match="has no weights: expected diffusion_pytorch_model.safetensors"):
        ckpt.choose_weights(["config.json"])


def test_pickle_is_refused_unless_opted_in(tmp_path):
    torch.save(_tensors(1), tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only has pickle weights.*allow_pickle=True"):
        ckpt.find_weights(tmp_path)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        ckpt.find_weights(tmp_path, use_safetensors=False)
    weights = ckpt.find_weights(tmp_path, allow_pickle=True)
    assert weights.is_pickle
    loaded = ckpt.load_state_dict(weights)
    assert torch.equal(loaded["layer0.weight"], _tensors(1)["layer0.weight"])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_opted_in_pickle_still_cannot_run_code(tmp_path):
    torch.save({"w": torch.zeros(1), "evil": _Exploit()}, tmp_path / "diffusion_pytorch_model.bin")
    weights = ckpt.find_weights(tmp_path, allow_pickle=True)
    with pytest.raises(CheckpointError, match="weights-only pickle"):
        ckpt.load_state_dict(weights)


def test_use_safetensors_true_requires_them(tmp_path):
    torch.save(_tensors(1), tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no safetensors weights"):
        ckpt.find_weights(tmp_path, use_safetensors=True, allow_pickle=True)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_is_named(tmp_path, damage):
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(_tensors(), path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x10" * 100, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=f"{path}.*truncated or corrupt"):
        ckpt.load_state_dict(ckpt.find_weights(tmp_path))


def test_sharded_round_trip_and_index(tmp_path):
    tensors = _tensors(4)  # 4 x 16 KiB
    written = ckpt.save_state_dict(tensors, tmp_path, max_shard_size=40_000)
    assert written[-1] == "diffusion_pytorch_model.safetensors.index.json"
    shards = written[:-1]
    assert shards == [f"diffusion_pytorch_model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    index = json.loads((tmp_path / written[-1]).read_text())
    assert index["metadata"]["total_size"] == 4 * 64 * 64 * 4
    assert set(index["weight_map"]) == set(tensors)
    loaded = ckpt.load_state_dict(ckpt.find_weights(tmp_path))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_sharded_variant_names(tmp_path):
    written = ckpt.save_state_dict(_tensors(2), tmp_path, variant="fp16", max_shard_size=20_000)
    assert written == [
        "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "diffusion_pytorch_model.safetensors.index.fp16.json",
    ]
    assert len(ckpt.find_weights(tmp_path, variant="fp16").files) == 2
    assert sorted(ckpt.weight_file_names(os.listdir(tmp_path), "diffusion_pytorch_model", "fp16")) == sorted(
        written
    )


def test_missing_shard_names_the_file_and_its_parameters(tmp_path):
    written = ckpt.save_state_dict(_tensors(4), tmp_path, max_shard_size=40_000)
    (tmp_path / written[1]).unlink()
    with pytest.raises(
        CheckpointError, match=r"missing: diffusion_pytorch_model-00002-of-00002.safetensors.*2 parameters"
    ):
        ckpt.find_weights(tmp_path)


def test_index_may_not_point_outside_the_folder(tmp_path):
    index = {"metadata": {}, "weight_map": {"w": "../../etc/passwd"}}
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="plain file names"):
        ckpt.find_weights(tmp_path)


def test_dtype_conversion_on_load(tmp_path):
    ckpt.save_state_dict({"w": torch.randn(3, 3), "steps": torch.arange(3)}, tmp_path)
    loaded = ckpt.load_state_dict(ckpt.find_weights(tmp_path), dtype=torch.bfloat16)
    assert loaded["w"].dtype == torch.bfloat16
    assert loaded["steps"].dtype == torch.int64  # integers are never cast
    kept = ckpt.load_state_dict(ckpt.find_weights(tmp_path), dtype=torch.float16, keep_dtype=("w",))
    assert kept["w"].dtype == torch.float32


def test_tied_weights_are_saved(tmp_path):
    w = torch.randn(4, 4)
    ckpt.save_state_dict({"a": w, "b": w, "c": w[:2]}, tmp_path)
    loaded = ckpt.load_state_dict(ckpt.find_weights(tmp_path))
    assert torch.equal(loaded["a"], w) and torch.equal(loaded["b"], w) and torch.equal(loaded["c"], w[:2])


@pytest.mark.parametrize(
    ("text", "size"),
    [("10GB", 10**10), ("5GiB", 5 * 2**30), ("500MB", 5 * 10**8), ("100KB", 10**5), (123, 123)],
)
def test_parse_size(text, size):
    assert ckpt.parse_size(text) == size


def test_parse_size_rejects_nonsense():
    with pytest.raises(ValueError, match="'5 gigs'"):
        ckpt.parse_size("5 gigs")
