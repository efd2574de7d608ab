"""Prompts -> CLIP text embeddings (SD 1.x/2.x: one encoder; SDXL: two, plus pooled embeddings).

Numerically the same as diffusers' `encode_prompt`: prompts are padded to the tokenizer's
`model_max_length` (77) and truncated with one warning naming the dropped words; negative prompts
are padded to the positive embeddings' length. transformers is only needed by the objects passed
in, so this module does not import it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

Prompt = str | Sequence[str]


@dataclass
class PromptEmbeds:
    """Text conditioning, already repeated `num_images_per_prompt` times; negatives are None without CFG."""

    prompt_embeds: Tensor  # (B, L, D)
    negative_prompt_embeds: Tensor | None = None  # (B, L, D)
    pooled_prompt_embeds: Tensor | None = None  # (B, D_pool), SDXL
    negative_pooled_prompt_embeds: Tensor | None = None


def prompt_list(prompt: Prompt | None, name: str = "prompt") -> list[str] | None:
    """`prompt` as a list of strings (None stays None); a clear error for any other type."""
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt):
        if not prompt:
            raise ValueError(f"`{name}` is an empty list; pass at least one string")
        return list(prompt)
    raise TypeError(f"`{name}` has to be a str or a list of str, got {type(prompt).__name__}: {prompt!r}")


def batch_size_of(prompt: Prompt | None, prompt_embeds: Tensor | None) -> int:
    """Number of prompts: from `prompt`, else from `prompt_embeds`; exactly one of them must be given."""
    if prompt is None and prompt_embeds is None:
        raise ValueError("provide either `prompt` or `prompt_embeds`")
    if prompt is not None and prompt_embeds is not None:
        raise ValueError("pass either `prompt` or `prompt_embeds`, not both")
    return len(prompt_list(prompt)) if prompt is not None else prompt_embeds.shape[0]


def negative_list(
    negative_prompt: Prompt | None, batch_size: int, name: str = "negative_prompt"
) -> list[str]:
    """One negative prompt per prompt: None -> "", a string is used for every prompt."""
    negatives = prompt_list(negative_prompt, name)
    if negatives is None:
        return [""] * batch_size
    if isinstance(negative_prompt, str):
        return negatives * batch_size
    if len(negatives) != batch_size:
        raise ValueError(
            f"`{name}` has batch size {len(negatives)} but `prompt` has batch size {batch_size}; "
            "pass one negative prompt per prompt, or a single string"
        )
    return negatives


def check_num_images(num_images_per_prompt: int) -> None:
    if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int):
        raise TypeError(f"`num_images_per_prompt` must be an int >= 1, got {num_images_per_prompt!r}")
    if num_images_per_prompt < 1:
        raise ValueError(f"`num_images_per_prompt` must be >= 1, got {num_images_per_prompt}")


def check_clip_skip(clip_skip: int | None) -> None:
    if clip_skip is not None and (
        isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or clip_skip < 0
    ):
        raise ValueError(
            f"`clip_skip` must be None or an int >= 0 (layers to skip from the end), got {clip_skip!r}"
        )


def tokenize(tokenizer: Any, prompts: list[str], max_length: int | None = None) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask), padded to `max_length` (default: the tokenizer's), truncation logged."""
    max_length = max_length or tokenizer.model_max_length
    full = tokenizer(prompts, padding=False, truncation=False, verbose=False).input_ids
    dropped = [tokenizer.decode(ids[max_length - 1 : -1]) for ids in full if len(ids) > max_length]
    if dropped:
        logger.warning(
            "CLIP can only handle sequences up to %d tokens; this part of the prompt was dropped: %s",
            max_length,
            dropped if len(dropped) > 1 else repr(dropped[0]),
        )
    out = tokenizer(
        prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    )
    return out.input_ids, out.attention_mask


def _device_of(module: Any) -> torch.device:
    return next(module.parameters()).device


def _repeat(x: Tensor | None, n: int) -> Tensor | None:
    """Repeat each prompt's row `n` times, keeping a prompt's copies adjacent (diffusers' order)."""
    return None if x is None else x.repeat_interleave(n, dim=0)


def _encode_clip(
    tokenizer: Any, text_encoder: Any, prompts: list[str], max_length: int | None, clip_skip: int | None
) -> Tensor:
    """SD 1.x/2.x: last hidden state, or the one `clip_skip` layers earlier passed through the final LayerNorm."""
    ids, mask = tokenize(tokenizer, prompts, max_length)
    return _run_clip(text_encoder, ids, mask, clip_skip)


def _run_clip(text_encoder: Any, ids: Tensor, mask: Tensor, clip_skip: int | None) -> Tensor:
    device = _device_of(text_encoder)
    use_mask = getattr(text_encoder.config, "use_attention_mask", False)
    mask = mask.to(device) if use_mask else None
    if clip_skip is None:
        return text_encoder(ids.to(device), attention_mask=mask)[0]
    out = text_encoder(ids.to(device), attention_mask=mask, output_hidden_states=True)
    # transformers 5 flattened CLIPTextModel (no `.text_model`); 4.x nests it
    final_layer_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    return final_layer_norm(out.hidden_states[-(clip_skip + 1)])


def encode_prompt(
    tokenizer: Any,
    text_encoder: Any,
    prompt: Prompt | None,
    *,
    device: torch.device | str | None = None,
    num_images_per_prompt: int = 1,
    do_classifier_free_guidance: bool = True,
    negative_prompt: Prompt | None = None,
    prompt_embeds: Tensor | None = None,
    negative_prompt_embeds: Tensor | None = None,
    clip_skip: int | None = None,
    dtype: torch.dtype | None = None,
) -> PromptEmbeds:
    """SD 1.x/2.x prompt encoding (one CLIP text encoder), equal to diffusers' `StableDiffusionPipeline.encode_prompt`.

    `clip_skip=k` uses the hidden state `k` layers before the last (with the final LayerNorm).
    Like diffusers, negative prompts are always encoded from the last layer.
    """
    check_num_images(num_images_per_prompt)
    check_clip_skip(clip_skip)
    batch = batch_size_of(prompt, prompt_embeds)
    needs_negatives = do_classifier_free_guidance and negative_prompt_embeds is None
    if (prompt_embeds is None or needs_negatives) and (tokenizer is None or text_encoder is None):
        raise ValueError(
            "this pipeline has no tokenizer/text_encoder; pass `prompt_embeds` and `negative_prompt_embeds`"
        )
    negatives = negative_list(negative_prompt, batch) if needs_negatives else None
    if prompt_embeds is None:
        ids, mask = tokenize(tokenizer, prompt_list(prompt))
        if negatives is not None and clip_skip is None:
            # Prompts and negative prompts in one call: the encoder's weights are read once, and each
            # row is computed as in a call of its own (SD1.5's encoder on 2 cores: 238 ms against 306
            # for two calls, bit for bit the same embeddings).
            negative_ids, negative_mask = tokenize(tokenizer, negatives, ids.shape[1])
            both = _run_clip(
                text_encoder, torch.cat([ids, negative_ids]), torch.cat([mask, negative_mask]), None
            )
            prompt_embeds, negative_prompt_embeds = both[: len(ids)], both[len(ids) :]
            negatives = None
        else:
            prompt_embeds = _run_clip(text_encoder, ids, mask, clip_skip)
    dtype = dtype or (text_encoder.dtype if text_encoder is not None else prompt_embeds.dtype)
    if negatives is not None:
        negative_prompt_embeds = _encode_clip(
            tokenizer, text_encoder, negatives, prompt_embeds.shape[1], None
        )
    if not do_classifier_free_guidance:
        negative_prompt_embeds = None
    elif negative_prompt_embeds.shape != prompt_embeds.shape:
        raise ValueError(
            f"`negative_prompt_embeds` has shape {tuple(negative_prompt_embeds.shape)} but `prompt_embeds` "
            f"has {tuple(prompt_embeds.shape)}; they must match"
        )
    to = {"device": device, "dtype": dtype}
    return PromptEmbeds(
        _repeat(prompt_embeds.to(**to), num_images_per_prompt),
        _repeat(
            None if negative_prompt_embeds is None else negative_prompt_embeds.to(**to), num_images_per_prompt
        ),
    )


def _encode_sdxl(
    encoders: list[tuple[Any, Any]],
    prompts: list[list[str]],
    max_length: int | None,
    clip_skip: int | None,
    negatives: list[list[str]] | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Penultimate (or `clip_skip`+1 earlier) hidden states of each encoder, concatenated; pooled from the
    last one. With `negatives` (and no `clip_skip`), their embeddings too, from the same encoder calls."""
    states, pooled = [], None  # each encoder's rows: the prompts', then the negatives' if any
    layer = -2 if clip_skip is None else -(clip_skip + 2)
    for n, (tokenizer, text_encoder) in enumerate(encoders):
        ids, _ = tokenize(tokenizer, prompts[n], max_length)
        if negatives is not None:  # one call for both halves: each weight read once (see encode_prompt)
            ids = torch.cat([ids, tokenize(tokenizer, negatives[n], ids.shape[1])[0]])
        out = text_encoder(ids.to(_device_of(text_encoder)), output_hidden_states=True)
        states.append(out.hidden_states[layer])
        if pooled is None and out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds
            pooled = out[0]
    hidden = torch.cat(states, dim=-1)
    rows = len(prompts[0])
    if negatives is None:
        return hidden, pooled, None, None
    if pooled is None:
        return hidden[:rows], None, hidden[rows:], None
    return hidden[:rows], pooled[:rows], hidden[rows:], pooled[rows:]


def encode_prompt_sdxl(
    tokenizer: Any,
    tokenizer_2: Any,
    text_encoder: Any,
    text_encoder_2: Any,
    prompt: Prompt | None,
    prompt_2: Prompt | None = None,
    *,
    device: torch.device | str | None = None,
    num_images_per_prompt: int = 1,
    do_classifier_free_guidance: bool = True,
    negative_prompt: Prompt | None = None,
    negative_prompt_2: Prompt | None = None,
    prompt_embeds: Tensor | None = None,
    negative_prompt_embeds: Tensor | None = None,
    pooled_prompt_embeds: Tensor | None = None,
    negative_pooled_prompt_embeds: Tensor | None = None,
    clip_skip: int | None = None,
    force_zeros_for_empty_prompt: bool = True,
    dtype: torch.dtype | None = None,
) -> PromptEmbeds:
    """SDXL prompt encoding, equal to diffusers' `StableDiffusionXLPipeline.encode_prompt`.

    `text_encoder` (CLIP-L) may be None (the refiner); `text_encoder_2` is a
    CLIPTextModelWithProjection whose `text_embeds` are the pooled embeddings. Without a
    negative prompt and with `force_zeros_for_empty_prompt`, negative embeddings are zeros.
    """
    check_num_images(num_images_per_prompt)
    check_clip_skip(clip_skip)
    batch = batch_size_of(prompt, prompt_embeds)
    encoders = [
        (t, e) for t, e in ((tokenizer, text_encoder), (tokenizer_2, text_encoder_2)) if e is not None
    ]
    if prompt_embeds is not None and pooled_prompt_embeds is None:
        raise ValueError("with `prompt_embeds`, also pass `pooled_prompt_embeds` (SDXL needs both)")
    zero_out = negative_prompt is None and force_zeros_for_empty_prompt
    negative_texts = None
    if do_classifier_free_guidance and negative_prompt_embeds is None and not zero_out:
        negatives = negative_list(negative_prompt, batch)
        negatives_2 = (
            negative_list(negative_prompt_2, batch, "negative_prompt_2") if negative_prompt_2 else negatives
        )
        negative_texts = [negatives, negatives_2][-len(encoders) :]
    if prompt_embeds is None:
        prompts = prompt_list(prompt)
        prompts_2 = prompt_list(prompt_2 or None, "prompt_2") or prompts  # "" falls back too, as in diffusers
        # negatives come from the penultimate layer whatever `clip_skip`: together only without it
        together = negative_texts if clip_skip is None else None
        prompt_embeds, pooled_prompt_embeds, negatives_out, negatives_pooled_out = _encode_sdxl(
            encoders, [prompts, prompts_2][-len(encoders) :], None, clip_skip, together
        )
        if together is not None:
            negative_prompt_embeds, negative_pooled_prompt_embeds = negatives_out, negatives_pooled_out
            negative_texts = None
    if do_classifier_free_guidance and negative_prompt_embeds is None and zero_out:
        negative_prompt_embeds = torch.zeros_like(prompt_embeds)
        negative_pooled_prompt_embeds = torch.zeros_like(pooled_prompt_embeds)
    elif negative_texts is not None:
        negative_prompt_embeds, negative_pooled_prompt_embeds = _encode_sdxl(
            encoders, negative_texts, prompt_embeds.shape[1], None
        )[:2]
    elif do_classifier_free_guidance and negative_pooled_prompt_embeds is None:
        raise ValueError(
            "with `negative_prompt_embeds`, also pass `negative_pooled_prompt_embeds` (SDXL needs both)"
        )
    if text_encoder_2 is not None:
        dtype = dtype or text_encoder_2.dtype
    to = {"device": device, "dtype": dtype or prompt_embeds.dtype}
    n = num_images_per_prompt
    cfg = do_classifier_free_guidance
    return PromptEmbeds(
        _repeat(prompt_embeds.to(**to), n),
        _repeat(negative_prompt_embeds.to(**to), n) if cfg else None,
        _repeat(pooled_prompt_embeds.to(device=device), n),
        _repeat(negative_pooled_prompt_embeds.to(device=device), n) if cfg else None,
    )
