"""Prompt encoding against diffusers' encode_prompt, on tiny seeded CLIP encoders and the real CLIP vocab."""

import logging
import types

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from sfumato.pipelines import text

LONG = "a photo of " + "cat " * 80 + "purple elephant"


def _sd_oracle(tokenizers, text_encoders):
    return types.SimpleNamespace(tokenizer=tokenizers[0], text_encoder=text_encoders[0], unet=None)


def _sdxl_oracle(tokenizers, text_encoders, force_zeros=True):
    return types.SimpleNamespace(
        tokenizer=tokenizers[0], tokenizer_2=tokenizers[1], text_encoder=text_encoders[0],
        text_encoder_2=text_encoders[1], unet=None,
        config=types.SimpleNamespace(force_zeros_for_empty_prompt=force_zeros),
    )  # fmt: skip


SD_CASES = [
    dict(prompt="a cat"),
    dict(prompt=["a cat", "a dog on the moon"], negative_prompt=["blurry", "ugly"], num_images_per_prompt=2),
    dict(prompt=LONG),
]


@pytest.mark.parametrize("case", SD_CASES)
def test_sd_matches_diffusers(tokenizers, text_encoders, case):
    case = {"num_images_per_prompt": 1, "do_classifier_free_guidance": True, **case}
    with torch.no_grad():
        expected = StableDiffusionPipeline.encode_prompt(
            _sd_oracle(tokenizers, text_encoders), device="cpu", **case
        )
        ours = text.encode_prompt(tokenizers[0], text_encoders[0], device="cpu", **case)
    torch.testing.assert_close(ours.prompt_embeds, expected[0])
    if case["do_classifier_free_guidance"]:
        torch.testing.assert_close(ours.negative_prompt_embeds, expected[1])
    else:
        assert ours.negative_prompt_embeds is None


def test_sd_prompts_and_negatives_share_one_encoder_call(tokenizers, text_encoders):
    """The weights are read once for both halves of classifier-free guidance; each half as if alone."""
    encoder = text_encoders[0]
    batches = []
    handle = encoder.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            both = text.encode_prompt(tokenizers[0], encoder, ["a cat", "a dog"], negative_prompt="blurry")
            prompt_only = text.encode_prompt(
                tokenizers[0], encoder, ["a cat", "a dog"], do_classifier_free_guidance=False
            )
            negative_only = text.encode_prompt(
                tokenizers[0], encoder, ["blurry", "blurry"], do_classifier_free_guidance=False
            )
    finally:
        handle.remove()
    assert batches == [4, 2, 2]
    torch.testing.assert_close(both.prompt_embeds, prompt_only.prompt_embeds, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(both.negative_prompt_embeds, negative_only.prompt_embeds, rtol=1e-6, atol=1e-6)


def test_sdxl_prompts_and_negatives_share_one_call_per_encoder(tokenizers, text_encoders):
    batches = []
    handles = [
        e.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0])) for e in text_encoders
    ]
    args = (tokenizers[0], tokenizers[1], text_encoders[0], text_encoders[1])
    try:
        with torch.no_grad():
            both = text.encode_prompt_sdxl(*args, "a cat", negative_prompt="blurry")
            alone = text.encode_prompt_sdxl(*args, "a cat", do_classifier_free_guidance=False)
            negative = text.encode_prompt_sdxl(*args, "blurry", do_classifier_free_guidance=False)
            given = text.encode_prompt_sdxl(
                *args, "a cat", negative_prompt_embeds=negative.prompt_embeds,
                negative_pooled_prompt_embeds=negative.pooled_prompt_embeds,
            )  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    assert batches == [2, 2, 1, 1, 1, 1, 1, 1]
    close = dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(both.prompt_embeds, alone.prompt_embeds, **close)
    torch.testing.assert_close(both.pooled_prompt_embeds, alone.pooled_prompt_embeds, **close)
    torch.testing.assert_close(both.negative_prompt_embeds, negative.prompt_embeds, **close)
    torch.testing.assert_close(both.negative_pooled_prompt_embeds, negative.pooled_prompt_embeds, **close)
    assert given.negative_prompt_embeds is not None  # embeddings the caller gave are kept
    torch.testing.assert_close(given.negative_prompt_embeds, negative.prompt_embeds, **close)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_sd_clip_skip_closed_form(tokenizers, text_encoders, clip_skip):
    # diffusers 0.42.1 cannot be the oracle here: it reads `text_encoder.text_model`, which
    # transformers 5 removed (AttributeError). Closed form: hidden state k layers before the last + final LN.
    tok, enc = tokenizers[0], text_encoders[0]
    ids = tok(
        ["a cat", "a dog"], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        hidden = enc(ids, output_hidden_states=True).hidden_states
        expected = enc.final_layer_norm(hidden[-(clip_skip + 1)])
        ours = text.encode_prompt(tok, enc, ["a cat", "a dog"], clip_skip=clip_skip, negative_prompt="blurry")
        last = text.encode_prompt(tok, enc, ["a cat", "a dog"], do_classifier_free_guidance=False)
        negative = text.encode_prompt(tok, enc, ["blurry", "blurry"], do_classifier_free_guidance=False)
    torch.testing.assert_close(ours.prompt_embeds, expected)
    assert not torch.allclose(ours.prompt_embeds, last.prompt_embeds)
    # like diffusers, the negative prompt ignores clip_skip
    torch.testing.assert_close(ours.negative_prompt_embeds, negative.prompt_embeds)


def test_sd_embeds_given_directly(tokenizers, text_encoders):
    pos, neg = torch.randn(2, 77, 32), torch.randn(2, 77, 32)
    out = text.encode_prompt(
        None, None, None, prompt_embeds=pos, negative_prompt_embeds=neg, num_images_per_prompt=3
    )
    torch.testing.assert_close(out.prompt_embeds, pos.repeat_interleave(3, 0))
    torch.testing.assert_close(out.negative_prompt_embeds[3:], neg[1:].expand(3, -1, -1))
    with pytest.raises(ValueError, match="pass `prompt_embeds` and `negative_prompt_embeds`"):
        text.encode_prompt(None, None, None, prompt_embeds=pos)
    with torch.no_grad():
        only_pos = text.encode_prompt(
            tokenizers[0], text_encoders[0], None, prompt_embeds=pos, negative_prompt="bad"
        )
    assert only_pos.negative_prompt_embeds.shape == (2, 77, 32)  # one string negative serves every prompt


def test_truncation_warning_names_dropped_words(tokenizers, text_encoders, caplog):
    with caplog.at_level(logging.WARNING):
        with torch.no_grad():
            text.encode_prompt(tokenizers[0], text_encoders[0], LONG, do_classifier_free_guidance=False)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages  # one warning, not transformers' too
    assert "77 tokens" in messages[0] and "purple elephant" in messages[0]
    assert "photo" not in messages[0] and messages[0].count("cat") == 80 + 3 - 75  # 75 tokens fit


@pytest.mark.parametrize(
    "bad,err,match",
    [
        (dict(prompt=None), ValueError, "either `prompt` or `prompt_embeds`"),
        (dict(prompt=123), TypeError, "`prompt` has to be a str or a list of str"),
        (dict(prompt=[]), ValueError, "empty list"),
        (
            dict(prompt=["a", "b"], negative_prompt=["c"]),
            ValueError,
            "batch size 1 but `prompt` has batch size 2",
        ),
        (dict(prompt="a", num_images_per_prompt=0), ValueError, "num_images_per_prompt"),
        (dict(prompt="a", clip_skip=-1), ValueError, "clip_skip"),
    ],
)
def test_bad_prompts(tokenizers, text_encoders, bad, err, match):
    with pytest.raises(err, match=match):
        text.encode_prompt(tokenizers[0], text_encoders[0], **bad)


SDXL_CASES = [
    dict(prompt="a cat"),
    dict(prompt="a cat", force_zeros=False),
    dict(
        prompt=["a cat", "a dog"],
        prompt_2=["cats", "dogs"],
        negative_prompt=["bad", "worse"],
        num_images_per_prompt=2,
    ),
    dict(prompt="a cat", negative_prompt="blurry", negative_prompt_2="grainy", clip_skip=1),
    dict(prompt=LONG, do_classifier_free_guidance=False),
]


@pytest.mark.parametrize("case", SDXL_CASES)
def test_sdxl_matches_diffusers(tokenizers, text_encoders, case):
    case = {"num_images_per_prompt": 1, "do_classifier_free_guidance": True, **case}
    force_zeros = case.pop("force_zeros", True)
    with torch.no_grad():
        oracle = _sdxl_oracle(tokenizers, text_encoders, force_zeros)
        expected = StableDiffusionXLPipeline.encode_prompt(oracle, device="cpu", **case)
        ours = text.encode_prompt_sdxl(
            *tokenizers, *text_encoders, device="cpu", force_zeros_for_empty_prompt=force_zeros, **case
        )
    got = (
        ours.prompt_embeds,
        ours.negative_prompt_embeds,
        ours.pooled_prompt_embeds,
        ours.negative_pooled_prompt_embeds,
    )
    assert ours.prompt_embeds.shape[-1] == 64 and ours.pooled_prompt_embeds.shape[-1] == 16
    for a, b in zip(got, expected):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b)


def test_sdxl_refiner_has_only_text_encoder_2(tokenizers, text_encoders):
    oracle = _sdxl_oracle(tokenizers, text_encoders, force_zeros=False)
    oracle.tokenizer, oracle.text_encoder = None, None
    with torch.no_grad():
        expected = StableDiffusionXLPipeline.encode_prompt(
            oracle, "a cat", device="cpu", negative_prompt="bad"
        )
        ours = text.encode_prompt_sdxl(
            None,
            tokenizers[1],
            None,
            text_encoders[1],
            "a cat",
            negative_prompt="bad",
            force_zeros_for_empty_prompt=False,
        )
    torch.testing.assert_close(ours.prompt_embeds, expected[0])
    torch.testing.assert_close(ours.negative_pooled_prompt_embeds, expected[3])
