"""CLIPTextModel / CLIPTextModelWithProjection: parity with transformers (the oracle), files both ways, resizing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from sfumato import CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402
from sfumato.checkpoint import CheckpointError  # noqa: E402

pytestmark = pytest.mark.parity

VOCAB = 99
EOS = 50  # not the largest id, so "first EOS" and "largest id" pick different positions
CONVENTIONS = {
    "eos_id": dict(eos_token_id=EOS, bos_token_id=97, pad_token_id=1),
    # configs written before transformers fixed CLIP's eos_token_id: pool at the largest id
    "legacy_eos_2": dict(eos_token_id=2, bos_token_id=0, pad_token_id=1),
}
CLASSES = {
    "plain": (CLIPTextModel, "CLIPTextModel"),
    "projection": (CLIPTextModelWithProjection, "CLIPTextModelWithProjection"),
}


def tiny_config(**extra) -> dict:
    config = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=16,
        projection_dim=8,
        **CONVENTIONS["eos_id"],
    )
    return {**config, **extra}


def seeded_transformers(name: str, config: dict, seed: int = 0):
    """transformers' model with seeded weights; LayerNorms get random affine parameters so they matter."""
    torch.manual_seed(seed)
    model = getattr(transformers, name)(transformers.CLIPTextConfig(**config))
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key:
                p.uniform_(0.5, 1.5) if key.endswith("weight") else p.uniform_(-0.2, 0.2)
    return model.eval()


def pair(tmp_path, kind: str, **extra):
    """(transformers' model, ours loaded from the folder transformers saved)."""
    ours_cls, name = CLASSES[kind]
    theirs = seeded_transformers(name, tiny_config(**extra))
    theirs.save_pretrained(tmp_path / "theirs")
    return theirs, ours_cls.from_pretrained(tmp_path / "theirs")


def token_ids(batch: int = 3, length: int = 12, seed: int = 0) -> torch.Tensor:
    """bos, random tokens (some above EOS), EOS, then EOS padding at different places per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB - 1, (batch, length), generator=g)
    ids[ids == EOS] = EOS + 1
    ids[:, 0] = 0
    for row in range(batch):
        end = 4 + 3 * row
        ids[row, end:] = EOS
        ids[row, end] = VOCAB - 1 if row == 0 else EOS  # row 0: the largest id as a second end marker
    return ids


def padding_mask(ids: torch.Tensor) -> torch.Tensor:
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    mask[1, 9:] = 0
    return mask  # the last row is not padded


def assert_outputs_equal(theirs, ours, atol: float = 1e-6) -> None:
    assert list(ours.keys()) == list(theirs.keys())
    for key in theirs.keys():
        a, b = theirs[key], ours[key]
        for x, y in zip(a, b) if isinstance(a, tuple) else [(a, b)]:
            torch.testing.assert_close(y, x, atol=atol, rtol=0, msg=lambda m, k=key: f"{k}: {m}")


# --------------------------------------------------------------------------- parity


def test_state_dict_keys_and_shapes_equal_transformers(tmp_path):
    for kind, (ours_cls, name) in CLASSES.items():
        theirs = seeded_transformers(name, tiny_config())
        ours = ours_cls(**tiny_config())
        assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
            (k, v.shape) for k, v in theirs.state_dict().items()
        ], kind


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("convention", list(CONVENTIONS))
@pytest.mark.parametrize("masked", [False, True])
def test_matches_transformers_fp32(tmp_path, kind, hidden_act, convention, masked):
    theirs, ours = pair(tmp_path, kind, hidden_act=hidden_act, **CONVENTIONS[convention])
    ids = token_ids()
    mask = padding_mask(ids) if masked else None
    with torch.no_grad():
        expected = theirs(ids, attention_mask=mask, output_hidden_states=True)
        actual = ours(ids, attention_mask=mask, output_hidden_states=True)
        assert len(actual.hidden_states) == 1 + theirs.config.num_hidden_layers
        assert_outputs_equal(expected, actual)
        assert_outputs_equal(theirs(ids, attention_mask=mask), ours(ids, attention_mask=mask))


def test_padding_changes_the_output_and_an_all_ones_mask_does_not(tmp_path):
    _, ours = pair(tmp_path, "plain")
    ids = token_ids()
    with torch.no_grad():
        plain = ours(ids).last_hidden_state
        assert torch.equal(ours(ids, attention_mask=torch.ones_like(ids)).last_hidden_state, plain)
        padded = ours(ids, attention_mask=padding_mask(ids)).last_hidden_state
    assert not torch.allclose(padded[0, 7:], plain[0, 7:])
    torch.testing.assert_close(padded[0, :7], plain[0, :7])  # causal: earlier tokens never see padding


@pytest.mark.parametrize("kind", list(CLASSES))
def test_matches_transformers_bf16(tmp_path, kind):
    theirs, ours = pair(tmp_path, kind)
    theirs, ours = theirs.to(torch.bfloat16), ours.to(torch.bfloat16)
    assert ours.dtype == torch.bfloat16
    ids = token_ids()
    with torch.no_grad():
        expected, actual = theirs(ids, output_hidden_states=True), ours(ids, output_hidden_states=True)
    for key in expected.keys():
        for x, y in zip(*(v if isinstance(v, tuple) else (v,) for v in (expected[key], actual[key]))):
            assert y.dtype == torch.bfloat16
            torch.testing.assert_close(y.float(), x.float(), atol=2e-2 * x.float().abs().max().item(), rtol=0)


@pytest.mark.parametrize("kind", list(CLASSES))
def test_tuple_outputs_and_indexing(tmp_path, kind):
    theirs, ours = pair(tmp_path, kind)
    ids = token_ids()
    with torch.no_grad():
        for hidden in (False, True):
            expected = theirs(ids, output_hidden_states=hidden, return_dict=False)
            actual = ours(ids, output_hidden_states=hidden, return_dict=False)
            assert isinstance(actual, tuple) and len(actual) == len(expected)
            torch.testing.assert_close(actual[0], expected[0], atol=1e-6, rtol=0)
        out = ours(ids)
    first = out.text_embeds if kind == "projection" else out.last_hidden_state
    assert out[0] is first and out[out.keys()[1]] is out[1]
    assert out.hidden_states is None and "hidden_states" not in out.keys()


def test_position_ids_argument(tmp_path):
    theirs, ours = pair(tmp_path, "plain")
    ids = token_ids()
    positions = torch.arange(ids.shape[1]).flip(0)[None]
    with torch.no_grad():
        assert_outputs_equal(theirs(ids, position_ids=positions), ours(ids, position_ids=positions))


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    _, ours = pair(tmp_path, "plain")
    ids = token_ids()

    def grads():
        ours.zero_grad()
        ours(ids).pooler_output.square().sum().backward()
        return {k: p.grad.clone() for k, p in ours.named_parameters() if p.grad is not None}

    ours.train()
    plain = grads()
    ours.gradient_checkpointing_enable()
    assert ours.is_gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and plain
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key])


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("kind", list(CLASSES))
def test_transformers_loads_what_we_save(tmp_path, kind):
    theirs, ours = pair(tmp_path, kind)
    ours.save_pretrained(tmp_path / "ours")
    assert (tmp_path / "ours" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["architectures"] == [CLASSES[kind][1]] and config["model_type"] == "clip_text_model"
    assert not any(k.startswith("_") for k in config)
    back, info = getattr(transformers, CLASSES[kind][1]).from_pretrained(
        tmp_path / "ours", output_loading_info=True
    )
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    ids = token_ids()
    with torch.no_grad():
        assert_outputs_equal(
            theirs(ids, output_hidden_states=True), back.eval()(ids, output_hidden_states=True)
        )


@pytest.mark.parametrize("kind", list(CLASSES))
def test_loads_old_checkpoints_with_prefix_and_position_ids(tmp_path, kind):
    """transformers < 4.31 wrote `text_model.`-prefixed keys plus the `position_ids` buffer (e.g. SD1.5's Hub files)."""
    theirs, _ = pair(tmp_path, kind)
    folder = tmp_path / "theirs"
    weights = load_file(folder / "model.safetensors")
    old = {
        (k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}"): v
        for k, v in weights.items()
    }
    old["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(old, folder / "model.safetensors")
    ours = CLASSES[kind][0].from_pretrained(folder)
    ids = token_ids()
    with torch.no_grad():
        assert_outputs_equal(theirs(ids), ours(ids))
    # and a projection checkpoint without the prefix (the layout transformers 5 writes for CLIPTextModel)
    if kind == "projection":
        flat = {k.removeprefix("text_model."): v for k, v in old.items()}
        save_file(flat, folder / "model.safetensors")
        with torch.no_grad():
            assert_outputs_equal(theirs(ids), CLIPTextModelWithProjection.from_pretrained(folder)(ids))


def test_fp16_variant_and_dtypes(tmp_path):
    theirs, _ = pair(tmp_path, "plain")
    half = theirs.to(torch.float16)
    half.save_pretrained(tmp_path / "half", variant="fp16")
    assert (tmp_path / "half" / "model.fp16.safetensors").is_file()
    with pytest.raises(CheckpointError, match="fp16"):
        CLIPTextModel.from_pretrained(tmp_path / "theirs", variant="fp16")
    loaded = CLIPTextModel.from_pretrained(tmp_path / "half", variant="fp16")
    assert loaded.dtype == torch.float32  # like diffusers: float32 unless asked
    kept = CLIPTextModel.from_pretrained(tmp_path / "half", variant="fp16", torch_dtype=torch.float16)
    assert kept.dtype == torch.float16
    for key, value in half.state_dict().items():
        assert torch.equal(kept.state_dict()[key], value), key


def test_pickle_is_refused_unless_allowed(tmp_path):
    theirs, _ = pair(tmp_path, "plain")
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tmp_path / "theirs" / "config.json").read_text())
    torch.save({f"text_model.{k}": v for k, v in theirs.state_dict().items()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        CLIPTextModel.from_pretrained(folder)
    ours = CLIPTextModel.from_pretrained(folder, allow_pickle=True)
    with torch.no_grad():
        assert_outputs_equal(theirs(token_ids()), ours(token_ids()))


def test_loading_errors_name_the_problem(tmp_path):
    pair(tmp_path, "plain")  # writes tmp_path / "theirs"
    folder = tmp_path / "theirs"
    with pytest.raises(CheckpointError, match="text_projection.weight"):
        CLIPTextModelWithProjection.from_pretrained(folder)  # no projection in a CLIPTextModel file
    with pytest.raises(
        CheckpointError, match=r"token_embedding.weight \(checkpoint \[99, 32\], model \[100, 32\]"
    ):
        CLIPTextModel.from_pretrained(folder, vocab_size=100)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "clip"}))
    with pytest.raises(ValueError, match="'clip' model"):
        CLIPTextModel.from_pretrained(folder)


def test_argument_errors():
    with pytest.raises(ValueError, match="hidden_act 'gelu_new'"):
        CLIPTextModel(**tiny_config(hidden_act="gelu_new"))
    model = CLIPTextModel(**tiny_config())
    with pytest.raises(ValueError, match="at most 16 tokens"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="attention weights"):
        model(token_ids(), output_attentions=True)
    with pytest.raises(ValueError, match=r"attention_mask must have shape"):
        model(token_ids(), attention_mask=torch.ones(3, 5))


# --------------------------------------------------------------------------- embeddings


def test_input_embeddings_accessors():
    for ours_cls, _ in CLASSES.values():
        model = ours_cls(**tiny_config())
        assert model.get_input_embeddings() is model.text_model.embeddings.token_embedding
        assert 0.9 < model.get_input_embeddings().weight.std().item() < 1.1  # nn.Embedding's N(0, 1) init
        new = torch.nn.Embedding(VOCAB, 32)
        model.set_input_embeddings(new)
        assert model.get_input_embeddings() is new


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("hidden_size", [32, 128])  # 128 > vocab: singular covariance, new rows are the mean
def test_resize_token_embeddings_like_transformers(tmp_path, kind, hidden_size):
    theirs, ours = pair(tmp_path, kind, hidden_size=hidden_size, intermediate_size=40)
    parameter = ours.get_input_embeddings().weight
    old = parameter.detach().clone()
    theirs.resize_token_embeddings(VOCAB + 5)
    returned = ours.resize_token_embeddings(VOCAB + 5)
    assert returned is ours.get_input_embeddings() and returned.weight is parameter
    assert ours.config.vocab_size == VOCAB + 5 == returned.num_embeddings
    new, reference = parameter.detach(), theirs.get_input_embeddings().weight.detach()
    assert new.shape == reference.shape and torch.equal(new[:VOCAB], old)
    torch.testing.assert_close(new[VOCAB:], reference[VOCAB:], atol=1e-3 * old.abs().max().item(), rtol=0)
    if hidden_size > VOCAB:
        torch.testing.assert_close(new[VOCAB:], reference[VOCAB:])
    ids = torch.cat([token_ids(), torch.full((3, 2), VOCAB + 2)], dim=1)
    ids[:, -1] = EOS
    with torch.no_grad():
        assert_outputs_equal(theirs(ids), ours(ids), atol=1e-3 if hidden_size <= VOCAB else 1e-6)


def test_resize_without_mean_padding_and_shrinking():
    model = CLIPTextModel(**tiny_config())
    old = model.get_input_embeddings().weight.detach().clone()
    torch.manual_seed(0)
    model.resize_token_embeddings(VOCAB + 300, mean_resizing=False)
    added = model.get_input_embeddings().weight.detach()[VOCAB:]
    assert (
        abs(added.std().item() - 0.02) < 0.002 and abs(added.mean().item()) < 0.002
    )  # N(0, initializer_range²)
    assert model.resize_token_embeddings(VOCAB, pad_to_multiple_of=8).num_embeddings == 104
    assert model.resize_token_embeddings(50).num_embeddings == 50 and model.config.vocab_size == 50
    assert torch.equal(model.get_input_embeddings().weight.detach(), old[:50])
    assert model.resize_token_embeddings() is model.get_input_embeddings()
