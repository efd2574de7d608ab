"""Stable Diffusion text2img / img2img / inpaint: the same folder and seeds give the same images as diffusers."""

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch

import sfumato
from pipelines.sd.components import PROMPT, assert_images_close, make_image, make_mask, quiet
from sfumato.schedulers._names import NAMES as SCHEDULERS

# diffusers' schedulers call numpy on torch tensors, which numpy 2 warns about on every step
pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")]

# every sfumato scheduler that diffusers lists as compatible with SD's (Karras-family) schedulers
SCHEDULER_NAMES = sorted(set(SCHEDULERS) & set(diffusers.PNDMScheduler._compatibles))


def _generator(seed):
    if isinstance(seed, list):
        return [torch.Generator().manual_seed(s) for s in seed]
    return torch.Generator().manual_seed(seed)


def _both(pipes, seed=0, **kwargs):
    """Call both pipelines with the same arguments and fresh generators; returns (theirs, ours) outputs."""
    theirs, ours = pipes
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("output_type", "np")
    return (
        theirs(generator=_generator(seed), **kwargs).images,
        ours(generator=_generator(seed), **kwargs).images,
    )


def _as(cls_name, pipes):
    """New pipelines of class `cls_name` sharing the session pipelines' components."""
    import diffusers

    theirs, ours = pipes
    return quiet(
        getattr(diffusers, cls_name)(**theirs.components),
        getattr(sfumato, cls_name)(**ours.components),
    )


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_text2img_every_scheduler(sd_pipes, name):
    import diffusers

    theirs, ours = _as("StableDiffusionPipeline", sd_pipes)
    theirs.scheduler = getattr(diffusers, name).from_config(theirs.scheduler.config)
    ours.scheduler = getattr(sfumato, name).from_config(ours.scheduler.config)
    assert_images_close(*_both((theirs, ours), prompt=PROMPT))


def test_text2img_without_guidance(sd_pipes):
    assert_images_close(*_both(sd_pipes, prompt=PROMPT, guidance_scale=1.0, num_inference_steps=3))


def test_text2img_batches_generators_and_options(sd_pipes):
    """Two prompts x 2 images each, one generator per image, negatives, rescale and eta in one call."""
    theirs, ours = _both(
        sd_pipes, seed=[1, 2, 3, 4], prompt=[PROMPT, "a red house"], negative_prompt=["blurry", "dark"],
        num_images_per_prompt=2, guidance_rescale=0.7, eta=0.5,
    )  # fmt: skip
    assert ours.shape == (4, 64, 64, 3)
    assert_images_close(theirs, ours)
    assert not np.allclose(ours[0], ours[1])  # different generators, different images


def test_text2img_size_and_embeds(sd_pipes):
    theirs, ours = sd_pipes
    embeds, negative = theirs.encode_prompt(PROMPT, "cpu", 1, True, "ugly")
    ours_embeds, ours_negative = ours.encode_prompt(PROMPT, "cpu", 1, True, "ugly")
    torch.testing.assert_close(ours_embeds, embeds)
    torch.testing.assert_close(ours_negative, negative)
    out = _both(sd_pipes, prompt_embeds=embeds, negative_prompt_embeds=negative, height=48, width=32)
    assert out[1].shape == (1, 48, 32, 3)
    assert_images_close(*out)


def test_clip_skip(sd_pipes):
    """diffusers' clip_skip breaks on transformers 5 (no `.text_model`), so its input is built by hand here."""
    theirs, ours = sd_pipes
    ids = theirs.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    hidden = theirs.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    embeds = theirs.text_encoder.final_layer_norm(hidden)
    kwargs = dict(num_inference_steps=2, output_type="np", guidance_scale=1.0)
    expected = theirs(prompt_embeds=embeds, generator=_generator(0), **kwargs).images
    got = ours(PROMPT, clip_skip=1, generator=_generator(0), **kwargs).images
    assert_images_close(expected, got)
    assert not np.allclose(got, ours(PROMPT, generator=_generator(0), **kwargs).images, atol=1e-4)


@pytest.mark.parametrize("output_type", ["pil", "pt", "latent"])
def test_output_types(sd_pipes, output_type):
    theirs, ours = _both(sd_pipes, prompt=PROMPT, output_type=output_type, guidance_scale=1.0)
    if output_type == "pil":
        assert isinstance(ours[0], PIL.Image.Image) and ours[0].size == (64, 64)
        theirs, ours = np.stack(theirs) / 255.0, np.stack(ours) / 255.0
    else:
        assert isinstance(ours, torch.Tensor)
        assert ours.shape == ((1, 3, 64, 64) if output_type == "pt" else (1, 4, 8, 8))
        theirs, ours = theirs.numpy(), ours.numpy()
    # 8-bit images: float differences of ~1e-6 may still round to the neighbouring level (1/255 apart)
    atol = {"pil": 1 / 255 + 1e-6, "pt": 1 / 255, "latent": 1e-4}[output_type]
    assert_images_close(theirs, ours, atol=atol)


def test_return_dict_false(sd_pipes):
    out = sd_pipes[1](PROMPT, num_inference_steps=1, output_type="np", return_dict=False)
    assert isinstance(out, tuple) and len(out) == 2 and out[1] is None and out[0].shape == (1, 64, 64, 3)


def test_callback_changes_latents(sd_pipes):
    seen = {"diffusers": [], "sfumato": []}

    def callback(pipe, i, t, tensors):
        seen[type(pipe).__module__.split(".")[0]].append((i, tuple(tensors["prompt_embeds"].shape)))
        return {"latents": tensors["latents"] * 0.5} if i == 0 else {}

    kwargs = dict(
        callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]
    )
    theirs, ours = _both(sd_pipes, prompt=PROMPT, **kwargs)
    assert_images_close(theirs, ours)
    assert seen["sfumato"] == seen["diffusers"]
    assert len(seen["sfumato"]) == len(sd_pipes[1].scheduler.timesteps)  # PNDM: 2 steps, 3 timesteps
    assert {shape for _, shape in seen["sfumato"]} == {(2, 77, 32)}  # [negative, positive] embeddings
    plain = sd_pipes[1](PROMPT, num_inference_steps=2, output_type="np", generator=_generator(0)).images
    assert not np.allclose(plain, ours, atol=1e-3)  # the callback's change reached the output


def test_guidance_halves_shared_only_when_optimized(sd_pipes, sd_folder):
    assert sd_pipes[1].unet.share_guidance_halves  # from_pretrained optimizes
    (plain,) = quiet(sfumato.StableDiffusionPipeline.from_pretrained(sd_folder, optimize=False))
    assert not plain.unet.share_guidance_halves
    theirs = sd_pipes[0](PROMPT, num_inference_steps=2, output_type="np", generator=_generator(0)).images
    ours = plain(PROMPT, num_inference_steps=2, output_type="np", generator=_generator(0)).images
    np.testing.assert_array_equal(theirs, ours)  # diffusers' kernels, bit for bit


def test_text_keys_and_values_projected_once_per_image(sd_pipes):
    ours = sd_pipes[1]
    cross = [m.attn2 for m in ours.unet.modules() if hasattr(m, "attn2")]
    calls = []
    handles = [a.to_k.register_forward_hook(lambda m, args, out: calls.append(m)) for a in cross]
    try:
        ours(PROMPT, num_inference_steps=3, output_type="np", generator=_generator(0))
    finally:
        for handle in handles:
            handle.remove()
    steps = len(ours.scheduler.timesteps)
    assert cross and steps > 1 and sorted(map(id, calls)) == sorted(id(a.to_k) for a in cross)


@pytest.mark.parametrize("in_place", [False, True])
def test_callback_changes_prompt_embeds(sd_pipes, in_place):
    """New text embeddings from a callback reach the next steps' cross-attention (its kept keys and
    values are not reused for them), whether the callback returns a new tensor or edits it in place."""

    def callback(pipe, i, t, tensors):
        if i != 1:
            return {}
        if in_place:
            tensors["prompt_embeds"].mul_(0.25)
            return {}
        return {"prompt_embeds": tensors["prompt_embeds"] * 0.25}

    kwargs = dict(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    theirs, ours = _both(sd_pipes, prompt=PROMPT, num_inference_steps=4, **kwargs)
    assert_images_close(theirs, ours)
    plain = sd_pipes[1](PROMPT, num_inference_steps=4, output_type="np", generator=_generator(0)).images
    assert not np.allclose(plain, ours, atol=1e-3)  # the callback's change reached the output


def test_img2img(sd_pipes):
    pipes = _as("StableDiffusionImg2ImgPipeline", sd_pipes)
    image = make_image()
    theirs, ours = _both(pipes, prompt=PROMPT, image=image, strength=0.6, num_inference_steps=4)
    assert_images_close(theirs, ours)
    # a list of generators: one VAE posterior sample and one noise draw per image
    out = _both(pipes, seed=[5, 6], prompt=PROMPT, image=image, strength=0.75, num_inference_steps=3,
                num_images_per_prompt=2, guidance_scale=1.0)  # fmt: skip
    assert_images_close(*out)


def test_img2img_stochastic_scheduler(sd_pipes):
    import diffusers

    theirs, ours = _as("StableDiffusionImg2ImgPipeline", sd_pipes)
    theirs.scheduler = diffusers.EulerAncestralDiscreteScheduler.from_config(theirs.scheduler.config)
    ours.scheduler = sfumato.EulerAncestralDiscreteScheduler.from_config(ours.scheduler.config)
    out = _both(
        (theirs, ours), prompt=[PROMPT, "a boat"], image=make_image(3), strength=0.9, num_inference_steps=3
    )
    assert_images_close(*out)


@pytest.mark.parametrize("strength", [1.0, 0.7])
def test_inpaint_9_channel(sd_inpaint_pipes, strength):
    out = _both(sd_inpaint_pipes, prompt=PROMPT, image=make_image(), mask_image=make_mask(), strength=strength,
                num_inference_steps=3)  # fmt: skip
    assert_images_close(*out)


def test_inpaint_9_channel_batch_without_guidance(sd_inpaint_pipes):
    out = _both(sd_inpaint_pipes, seed=[7, 8], prompt=PROMPT, image=make_image(1), mask_image=make_mask(),
                num_images_per_prompt=2, guidance_scale=1.0)  # fmt: skip
    assert_images_close(*out)


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_inpaint_4_channel_blending(sd_pipes, strength):
    import diffusers

    theirs, ours = _as("StableDiffusionInpaintPipeline", sd_pipes)
    # a stochastic scheduler: the generator draws (VAE samples, noise, steps) must come in the same order
    theirs.scheduler = diffusers.EulerAncestralDiscreteScheduler.from_config(theirs.scheduler.config)
    ours.scheduler = sfumato.EulerAncestralDiscreteScheduler.from_config(ours.scheduler.config)
    image, mask = make_image(2), make_mask()
    theirs_out, ours_out = _both((theirs, ours), prompt=PROMPT, image=image, mask_image=mask, strength=strength,
                                 num_inference_steps=3)  # fmt: skip
    assert_images_close(theirs_out, ours_out)


@pytest.mark.parametrize("custom", [dict(timesteps=[999, 700, 300]), dict(sigmas=[14.6, 4.0, 1.0, 0.3])])
def test_custom_timesteps_and_sigmas(sd_pipes, custom):
    import diffusers

    theirs, ours = _as("StableDiffusionPipeline", sd_pipes)
    theirs.scheduler = diffusers.EulerDiscreteScheduler.from_config(theirs.scheduler.config)
    ours.scheduler = sfumato.EulerDiscreteScheduler.from_config(ours.scheduler.config)
    assert_images_close(*_both((theirs, ours), prompt=PROMPT, **custom))


def test_interrupt_from_a_callback(sd_pipes):
    """`pipe._interrupt = True` in a callback skips the remaining steps, as in diffusers."""
    steps = {"diffusers": 0, "sfumato": 0}

    def stop(pipe, i, t, tensors):
        steps[type(pipe).__module__.split(".")[0]] += 1
        pipe._interrupt = True
        return {}

    out = _both(sd_pipes, prompt=PROMPT, num_inference_steps=3, callback_on_step_end=stop)
    assert steps == {"diffusers": 1, "sfumato": 1}
    assert_images_close(*out)


def test_encode_prompt_positional_arguments(sd_pipes):
    """diffusers' positional order (..., lora_scale, clip_skip) works unchanged."""
    theirs, ours = sd_pipes
    args = (PROMPT, "cpu", 2, True, None, None, None, None, None)
    for expected, got in zip(theirs.encode_prompt(*args), ours.encode_prompt(*args)):
        torch.testing.assert_close(got, expected)


def test_inpaint_default_size_is_the_image_size(sd_inpaint_pipes):
    """sfumato defaults to the input's size; diffusers to the UNet's (64 here), so it gets the size explicitly."""
    image, mask = make_image(9).resize((32, 48)), make_mask().resize((32, 48))
    theirs, ours = sd_inpaint_pipes
    kwargs = dict(prompt=PROMPT, image=image, mask_image=mask, num_inference_steps=2, output_type="np")
    expected = theirs(generator=_generator(0), height=48, width=32, **kwargs).images
    got = ours(generator=_generator(0), **kwargs).images
    assert got.shape == (1, 48, 32, 3)
    assert_images_close(expected, got)


def test_text2img_given_latents(sd_pipes):
    latents = torch.randn(2, 4, 8, 8, generator=_generator(3))
    assert_images_close(*_both(sd_pipes, prompt=[PROMPT, "a dog"], latents=latents, guidance_scale=3.0))


def test_guidance_distilled_unet_with_lcm(sd_pipes, tmp_path):
    """A UNet with `time_cond_proj_dim` (LCM-distilled) gets the guidance scale as an embedding, no CFG batch."""
    from pipelines.sd.components import tiny_unet

    theirs = diffusers.StableDiffusionPipeline(
        **{**sd_pipes[0].components, "unet": tiny_unet(time_cond_proj_dim=16)}
    )
    theirs.scheduler = diffusers.LCMScheduler.from_config(theirs.scheduler.config)
    theirs.save_pretrained(tmp_path)
    ours = sfumato.DiffusionPipeline.from_pretrained(tmp_path)
    assert type(ours.scheduler) is sfumato.LCMScheduler
    calls = []
    ours.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    out = _both(quiet(theirs, ours), prompt=PROMPT, guidance_scale=8.0, num_inference_steps=2)
    assert_images_close(*out)
    assert calls == [1, 1]  # guidance as an embedding: one model pass per step, batch 1


def test_long_prompt_truncated_with_one_warning(sd_pipes, caplog):
    prompt = "a cat " * 40 + "zebra unicorn"
    with caplog.at_level("WARNING", logger="sfumato"):
        out = _both(sd_pipes, prompt=prompt, guidance_scale=1.0)
    ours = [r for r in caplog.records if r.name.startswith("sfumato")]
    assert len(ours) == 1 and "zebra unicorn" in ours[0].getMessage()
    assert_images_close(*out)


def test_inpaint_with_masked_image_latents(sd_inpaint_pipes):
    masked_image_latents = torch.randn(1, 4, 8, 8, generator=_generator(11))
    out = _both(sd_inpaint_pipes, prompt=PROMPT, image=make_image(), mask_image=make_mask(),
                masked_image_latents=masked_image_latents)  # fmt: skip
    assert_images_close(*out)


def test_freeu_matches_diffusers(sd_folder):
    theirs, ours = quiet(
        diffusers.StableDiffusionPipeline.from_pretrained(sd_folder),
        sfumato.StableDiffusionPipeline.from_pretrained(sd_folder),
    )
    plain = _both((theirs, ours), prompt=PROMPT)[1]
    for pipe in (theirs, ours):
        pipe.enable_freeu(s1=0.9, s2=0.2, b1=1.5, b2=1.6)
    expected, actual = _both((theirs, ours), prompt=PROMPT)
    assert_images_close(expected, actual)
    assert np.abs(actual - plain).max() > 0.02  # FreeU changed the image
    ours.disable_freeu()
    np.testing.assert_array_equal(_both((theirs, ours), prompt=PROMPT)[1], plain)


# diffusers' pipeline switches that user code calls; sfumato takes the same arguments
SWITCHES = [
    "enable_freeu", "disable_freeu", "enable_attention_slicing", "disable_attention_slicing",
    "set_attention_slice", "enable_xformers_memory_efficient_attention",
    "disable_xformers_memory_efficient_attention", "enable_model_cpu_offload",
    "enable_sequential_cpu_offload", "remove_all_hooks", "reset_device_map", "maybe_free_model_hooks",
    "fuse_qkv_projections", "unfuse_qkv_projections",
]  # fmt: skip


@pytest.mark.parametrize("name", SWITCHES)
def test_switches_take_diffusers_arguments(name):
    import inspect

    def parameters(cls):
        return [(p.name, p.default) for p in inspect.signature(getattr(cls, name)).parameters.values()]

    for cls_name in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        assert parameters(getattr(sfumato, cls_name)) == parameters(getattr(diffusers, cls_name))


def test_attention_slicing_and_xformers_switches(sd_folder):
    """diffusers slices attention on request; sfumato's already runs in bounded memory, so its image
    stays the same bit for bit, and equal to diffusers' sliced one within tolerance."""
    theirs, ours = quiet(
        diffusers.StableDiffusionPipeline.from_pretrained(sd_folder),
        sfumato.StableDiffusionPipeline.from_pretrained(sd_folder),
    )
    plain = _both((theirs, ours), prompt=PROMPT)[1]
    theirs.enable_attention_slicing(1)
    ours.enable_attention_slicing(1)
    ours.enable_xformers_memory_efficient_attention()
    expected, actual = _both((theirs, ours), prompt=PROMPT)
    np.testing.assert_array_equal(actual, plain)
    assert_images_close(expected, actual)


def test_fused_qkv_projections_match_diffusers(sd_folder):
    theirs, ours = quiet(
        diffusers.StableDiffusionPipeline.from_pretrained(sd_folder),
        sfumato.StableDiffusionPipeline.from_pretrained(sd_folder),
    )
    for pipe in (theirs, ours):
        pipe.fuse_qkv_projections()
    assert_images_close(*_both((theirs, ours), prompt=PROMPT))
    ours.unfuse_qkv_projections(unet=True, vae=True)
    theirs.unfuse_qkv_projections()
    assert_images_close(*_both((theirs, ours), prompt=PROMPT))


CALL_PROPERTIES = [
    "guidance_scale", "guidance_rescale", "clip_skip", "cross_attention_kwargs",
    "do_classifier_free_guidance", "num_timesteps", "interrupt",
]  # fmt: skip


def test_callbacks_see_the_call_settings_as_properties(sd_pipes):
    """Inside a callback, `pipe.guidance_rescale`, `pipe.clip_skip`, ... are this call's settings, as in diffusers."""
    seen = {"diffusers": [], "sfumato": []}

    def callback(pipe, i, t, tensors):
        seen[type(pipe).__module__.split(".")[0]].append(
            {name: getattr(pipe, name) for name in CALL_PROPERTIES}
        )
        return {}

    settings = dict(
        guidance_scale=5.0, guidance_rescale=0.3, cross_attention_kwargs={"note": 1}
    )  # ignored by both
    assert_images_close(*_both(sd_pipes, prompt=PROMPT, callback_on_step_end=callback, **settings))
    assert seen["sfumato"] == seen["diffusers"]  # PNDM: 2 steps are 3 timesteps
    assert seen["sfumato"][0] == {
        **settings, "clip_skip": None, "do_classifier_free_guidance": True, "num_timesteps": 3, "interrupt": False
    }  # fmt: skip
    # diffusers' clip_skip fails on transformers 5 (test_clip_skip), so the next call is ours alone
    ours = sd_pipes[1]
    ours(PROMPT, num_inference_steps=2, guidance_scale=1.0, clip_skip=1, callback_on_step_end=callback)
    assert seen["sfumato"][-1] == {
        "guidance_scale": 1.0, "guidance_rescale": 0.0, "clip_skip": 1, "cross_attention_kwargs": None,
        "do_classifier_free_guidance": False, "num_timesteps": 3, "interrupt": False,
    }  # fmt: skip
