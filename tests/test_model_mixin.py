"""ModelMixin: meta-device loading, round trips, variants, shards, errors, and diffusers' file format."""

import json
import os

import pytest
import torch

from sfumato.checkpoint import CheckpointError
from sfumato.config import register_to_config
from sfumato.models.base import ModelMixin


class TinyNet(ModelMixin):
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, width: int = 16, depth: int = 2, in_channels: int = 3):
        super().__init__()
        self.conv_in = torch.nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(depth))
        self.norm = torch.nn.GroupNorm(4, width)
        self.gradient_checkpointing = False

    def forward(self, x):
        h = self.norm(self.conv_in(x)).mean(dim=(2, 3))
        for block in self.blocks:
            h = block(h)
        return h


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyNet(**kw)


def _assert_same(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_round_trip_is_bit_identical(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = TinyNet.from_pretrained(tmp_path)
    _assert_same(model, loaded)
    assert not loaded.training
    assert loaded.config.width == 16 and loaded.config._name_or_path == str(tmp_path)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model.eval()(x), loaded(x))


def test_loading_does_no_random_initialisation(tmp_path, monkeypatch):
    _model().save_pretrained(tmp_path)
    real_tensors_initialised = []
    original = torch.nn.init.kaiming_uniform_

    def spy(tensor, *args, **kwargs):
        if not tensor.is_meta:
            real_tensors_initialised.append(tuple(tensor.shape))
        return original(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", spy)
    TinyNet.from_pretrained(tmp_path)
    assert real_tensors_initialised == []


def test_sharded_round_trip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path, max_shard_size=1500)
    files = sorted(os.listdir(tmp_path))
    assert "diffusion_pytorch_model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) > 1
    _assert_same(model, TinyNet.from_pretrained(tmp_path))
    # saving again unsharded removes the stale shards
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_fp16_variant_round_trip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    model.to(torch.float16).save_pretrained(tmp_path, variant="fp16")
    assert "diffusion_pytorch_model.fp16.safetensors" in os.listdir(tmp_path)
    half = TinyNet.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float16)
    _assert_same(model, half)
    # like diffusers, weights are loaded in float32 unless a dtype is asked for
    assert TinyNet.from_pretrained(tmp_path, variant="fp16").dtype == torch.float32


def test_sharded_variant_round_trip(tmp_path):
    model = _model().to(torch.bfloat16)
    model.save_pretrained(tmp_path, variant="bf16", max_shard_size=800)
    assert "diffusion_pytorch_model.safetensors.index.bf16.json" in os.listdir(tmp_path)
    _assert_same(model, TinyNet.from_pretrained(tmp_path, variant="bf16", dtype="bfloat16"))


def test_dtype_and_device_and_counts():
    model = _model()
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    model.blocks.requires_grad_(False)
    assert model.num_parameters(only_trainable=True) == model.num_parameters() - 2 * (16 * 16 + 16)


def test_bad_dtype_argument(tmp_path):
    _model().save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="torch_dtype must be a torch.dtype"):
        TinyNet.from_pretrained(tmp_path, torch_dtype="half-ish")
    with pytest.raises(ValueError, match="disagree"):
        TinyNet.from_pretrained(tmp_path, torch_dtype=torch.float16, dtype=torch.bfloat16)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"depth": 3}, r"missing 2 parameters: blocks.2.weight, blocks.2.bias"),
        ({"depth": 1}, r"unexpected 2 parameters: blocks.1.bias, blocks.1.weight"),
        (
            {"in_channels": 4},
            r"wrong shape: conv_in.weight \(checkpoint \[16, 3, 3, 3\], model \[16, 4, 3, 3\]\)",
        ),
    ],
)
def test_mismatches_name_the_file_and_parameters(tmp_path, override, pattern):
    _model().save_pretrained(tmp_path)
    with pytest.raises(
        CheckpointError, match=f"diffusion_pytorch_model.safetensors does not fit TinyNet.*{pattern}"
    ):
        TinyNet.from_pretrained(tmp_path, **override)


def test_ignore_mismatched_sizes_reinitialises_only_those(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    loaded = TinyNet.from_pretrained(tmp_path, in_channels=4, ignore_mismatched_sizes=True)
    assert loaded.conv_in.weight.shape == (16, 4, 3, 3) and not loaded.conv_in.weight.is_meta
    assert torch.equal(loaded.conv_in.bias, model.conv_in.bias)  # same module, right shape: kept
    assert torch.equal(loaded.blocks[0].weight, model.blocks[0].weight)
    assert loaded(torch.randn(1, 4, 8, 8)).isfinite().all()


def test_legacy_key_hook(tmp_path):
    class Renamed(TinyNet):
        @classmethod
        def _convert_legacy_keys(cls, state_dict):
            return {k.replace("old_norm.", "norm."): v for k, v in state_dict.items()}

    model = _model()
    model.save_pretrained(tmp_path)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file, save_file

    state = {k.replace("norm.", "old_norm."): v for k, v in load_file(path).items()}
    save_file(state, path)
    with pytest.raises(CheckpointError, match="old_norm.weight"):
        TinyNet.from_pretrained(tmp_path)
    _assert_same(model, Renamed.from_pretrained(tmp_path))


def test_interrupted_save_leaves_the_old_folder_intact(tmp_path, monkeypatch):
    target = tmp_path / "model"
    _model(seed=0).save_pretrained(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    import safetensors.torch

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        _model(seed=1).save_pretrained(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert os.listdir(tmp_path) == ["model"]  # no staging folder left behind
    with pytest.raises(OSError, match="disk full"):
        _model(seed=1).save_pretrained(tmp_path / "new")
    assert os.listdir(tmp_path) == ["model"]


def test_saving_a_meta_model_is_refused(tmp_path):
    with torch.device("meta"):
        model = TinyNet()
    with pytest.raises(CheckpointError, match="without data"):
        model.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        TinyNet.from_pretrained(tmp_path)


def test_unknown_class_through_the_base_class(tmp_path):
    _model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="names the class 'TinyNet', which sfumato does not have"):
        ModelMixin.from_pretrained(tmp_path)


def test_subfolder_and_flat_layout(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "pipe" / "unet")
    _assert_same(model, TinyNet.from_pretrained(tmp_path / "pipe", subfolder="unet"))
    model.save_pretrained(tmp_path / "flat")
    _assert_same(model, TinyNet.from_pretrained(tmp_path / "flat", subfolder="unet"))


def test_gradient_checkpointing_switch():
    model = _model()
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing


def test_offline_hub_cache_loads_a_model(tmp_path, monkeypatch):
    from fixtures.hub_cache import make_cache

    model = _model()
    model.save_pretrained(tmp_path / "saved")
    files = {f"unet/{p.name}": "" for p in (tmp_path / "saved").iterdir()}
    snapshot = make_cache(tmp_path / "hf", "org/tiny", files)
    for p in (tmp_path / "saved").iterdir():  # replace the placeholder blobs with the real bytes
        (snapshot / "unet" / p.name).resolve().write_bytes(p.read_bytes())
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_same(model, TinyNet.from_pretrained("org/tiny", subfolder="unet"))


# --------------------------------------------------------------------------- diffusers' format


@pytest.fixture(scope="module")
def diffusers_twin():
    diffusers = pytest.importorskip("diffusers")
    from diffusers.configuration_utils import register_to_config as d_register

    class DTinyNet(diffusers.ModelMixin, diffusers.ConfigMixin):
        @d_register
        def __init__(self, width: int = 16, depth: int = 2, in_channels: int = 3):
            super().__init__()
            self.conv_in = torch.nn.Conv2d(in_channels, width, 3, padding=1)
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(depth))
            self.norm = torch.nn.GroupNorm(4, width)

    return DTinyNet


@pytest.mark.parity
@pytest.mark.parametrize(("variant", "shard"), [(None, None), ("fp16", None), (None, 1500), ("fp16", 800)])
def test_folder_written_by_diffusers_loads_identically(tmp_path, diffusers_twin, variant, shard):
    torch.manual_seed(0)
    theirs = diffusers_twin()
    if variant:
        theirs = theirs.to(torch.float16)
    kwargs = {"variant": variant} | ({"max_shard_size": shard} if shard else {})
    theirs.save_pretrained(tmp_path / "d", **kwargs)
    ours = TinyNet.from_pretrained(tmp_path / "d", variant=variant, torch_dtype=theirs.dtype)
    _assert_same(theirs, ours)
    # and we write exactly the same file names
    _model().to(theirs.dtype).save_pretrained(tmp_path / "s", **kwargs)
    assert sorted(os.listdir(tmp_path / "s")) == sorted(os.listdir(tmp_path / "d"))


@pytest.mark.parity
def test_folder_written_by_sfumato_loads_in_diffusers(tmp_path, diffusers_twin):
    ours = _model()
    ours.save_pretrained(tmp_path, max_shard_size=1500)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "TinyNet" and "_diffusers_version" in config
    theirs = diffusers_twin.from_pretrained(tmp_path)
    _assert_same(ours, theirs)
