"""The shared loop against diffusers' SD pipelines (run with output_type="latent") and closed forms."""

import types

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)
from diffusers.callbacks import SDCFGCutoffCallback

from sfumato.pipelines import denoise
from sfumato.pipelines.denoise import Conditioning, Inpainting, StepInfo
from sfumato.pipelines.guidance import ClassifierFreeGuidance, cat_for_cfg
from sfumato.pipelines.images import mask_to_latents, preprocess_mask

SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
SCHEDULERS = {
    "ddim": lambda: DDIMScheduler(**SD_SCHEDULER, clip_sample=False),
    "euler_a": lambda: EulerAncestralDiscreteScheduler(**SD_SCHEDULER),
    "heun": lambda: HeunDiscreteScheduler(**SD_SCHEDULER),
}


def _embeds(seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 77, 32, generator=g), torch.randn(batch, 77, 32, generator=g)


def _oracle(cls, unet, scheduler, vae=None):
    pipe = cls(
        vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.vae_scale_factor = 2  # tiny UNet with sample_size 8 -> 16 px images
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _fresh(scheduler):
    return type(scheduler).from_config(scheduler.config)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("scale,rescale", [(7.5, 0.0), (4.0, 0.6), (1.0, 0.0)])
def test_txt2img_loop_matches_diffusers(tiny_unet_cond, name, scale, rescale):
    unet = tiny_unet_cond()
    pipe = _oracle(StableDiffusionPipeline, unet, SCHEDULERS[name]())
    neg, pos = _embeds()
    kwargs = dict(num_inference_steps=4, guidance_scale=scale, guidance_rescale=rescale, eta=0.5)
    expected = pipe(
        prompt_embeds=pos, negative_prompt_embeds=neg, height=16, width=16, output_type="latent",
        generator=torch.Generator().manual_seed(3), **kwargs,
    ).images  # fmt: skip

    scheduler = _fresh(pipe.scheduler)
    generator = torch.Generator().manual_seed(3)
    timesteps, _ = denoise.set_timesteps(scheduler, 4)
    latents = denoise.prepare_latents((1, 4, 8, 8), scheduler, generator)
    guidance = ClassifierFreeGuidance(scale, rescale)
    cond = Conditioning(encoder_hidden_states=cat_for_cfg(neg, pos, guidance))
    with torch.no_grad():
        out = denoise.run(
            unet, scheduler, latents, timesteps, conditioning=cond, guidance=guidance,
            step_kwargs={"eta": 0.5, "generator": generator}, progress_bar=False,
        )  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_cfg_cutoff_callback_from_diffusers(tiny_unet_cond):
    unet = tiny_unet_cond()
    pipe = _oracle(StableDiffusionPipeline, unet, SCHEDULERS["ddim"]())
    neg, pos = _embeds(1)
    callback = SDCFGCutoffCallback(cutoff_step_ratio=0.5)
    expected = pipe(
        prompt_embeds=pos, negative_prompt_embeds=neg, height=16, width=16, output_type="latent",
        num_inference_steps=4, generator=torch.Generator().manual_seed(0), callback_on_step_end=callback,
    ).images  # fmt: skip

    scheduler = _fresh(pipe.scheduler)
    fake_pipe = types.SimpleNamespace(_guidance_scale=7.5, interrupt=False, num_timesteps=4)
    guidance = ClassifierFreeGuidance(7.5)
    latents = denoise.prepare_latents((1, 4, 8, 8), scheduler, torch.Generator().manual_seed(0))
    denoise.set_timesteps(scheduler, 4)
    with torch.no_grad():
        out = denoise.run(
            unet, scheduler, latents, conditioning=Conditioning(encoder_hidden_states=torch.cat([neg, pos])),
            guidance=guidance, callback_on_step_end=callback, pipe=fake_pipe, progress_bar=False,
        )  # fmt: skip
    assert fake_pipe._guidance_scale == 0.0
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ddim", "heun"])
def test_img2img_strength_matches_diffusers(tiny_unet_cond, name):
    unet = tiny_unet_cond()
    pipe = _oracle(StableDiffusionImg2ImgPipeline, unet, SCHEDULERS[name]())
    neg, pos = _embeds(2)
    image_latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    expected = pipe(
        prompt_embeds=pos, negative_prompt_embeds=neg, image=image_latents, strength=0.6,
        num_inference_steps=5, output_type="latent", generator=torch.Generator().manual_seed(4),
    ).images  # fmt: skip

    scheduler = _fresh(pipe.scheduler)
    generator = torch.Generator().manual_seed(4)
    denoise.set_timesteps(scheduler, 5)
    timesteps, steps = denoise.strength_timesteps(scheduler, 5, 0.6)
    assert steps == 3 and timesteps[0] == scheduler.timesteps[2 * scheduler.order]
    noise = denoise.randn_tensor((1, 4, 8, 8), generator)
    latents = scheduler.add_noise(image_latents, noise, timesteps[:1])
    with torch.no_grad():
        out = denoise.run(
            unet, scheduler, latents, timesteps, guidance=ClassifierFreeGuidance(7.5),
            conditioning=Conditioning(encoder_hidden_states=torch.cat([neg, pos])), progress_bar=False,
        )  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_channels", [4, 9])
@pytest.mark.parametrize("strength", [1.0, 0.7])
def test_inpaint_matches_diffusers(tiny_unet_cond, tiny_vae, in_channels, strength):
    unet = tiny_unet_cond(in_channels)
    pipe = _oracle(StableDiffusionInpaintPipeline, unet, SCHEDULERS["ddim"](), tiny_vae)
    neg, pos = _embeds(3)
    g = torch.Generator().manual_seed(11)
    image_latents, masked_latents = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    mask = (torch.rand(1, 1, 16, 16, generator=g) > 0.5).float()
    expected = pipe(
        prompt_embeds=pos, negative_prompt_embeds=neg, image=image_latents, mask_image=mask,
        masked_image_latents=masked_latents, strength=strength, height=16, width=16, num_inference_steps=4,
        output_type="latent", generator=torch.Generator().manual_seed(5),
    ).images  # fmt: skip

    scheduler = _fresh(pipe.scheduler)
    denoise.set_timesteps(scheduler, 4)
    timesteps, _ = denoise.strength_timesteps(scheduler, 4, strength)
    noise = denoise.randn_tensor((1, 4, 8, 8), torch.Generator().manual_seed(5))
    if strength == 1.0:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(image_latents, noise, timesteps[:1])
    small_mask = mask_to_latents(preprocess_mask(mask, 16, 16), 8, 8)
    inpainting = Inpainting(small_mask, image_latents, noise, masked_latents if in_channels == 9 else None)
    with torch.no_grad():
        out = denoise.run(
            unet, scheduler, latents, timesteps, guidance=ClassifierFreeGuidance(7.5), inpainting=inpainting,
            conditioning=Conditioning(encoder_hidden_states=torch.cat([neg, pos])), progress_bar=False,
        )  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- stub-model unit tests


class StubUNet:
    """eps = 0.1 * x; records the calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, **kwargs):
        self.calls.append((x.shape, kwargs))
        return types.SimpleNamespace(sample=0.1 * x)


def _ddim(n=5):
    scheduler = DDIMScheduler(**SD_SCHEDULER, clip_sample=False)
    scheduler.set_timesteps(n)
    return scheduler


def test_callbacks_see_and_replace_tensors():
    scheduler, unet = _ddim(), StubUNet()
    seen, infos = [], []

    def callback(pipe, i, t, tensors):
        seen.append((i, int(t), sorted(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])} if i == 2 else {}

    def on_step(info: StepInfo):
        infos.append(info)

    out = denoise.run(
        unet, scheduler, torch.ones(1, 4, 8, 8),
        conditioning=Conditioning(encoder_hidden_states=torch.zeros(1, 77, 32)),
        callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
        on_step=on_step, progress_bar=False,
    )  # fmt: skip
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert [s[1] for s in seen] == scheduler.timesteps.tolist()
    assert seen[0][2] == ["latents", "prompt_embeds"]
    assert infos[2].latents.abs().sum() == 0 and infos[2].num_steps == 5
    # eps = 0.1 x keeps zeros at zero under DDIM with eta = 0
    assert out.abs().sum() == 0
    assert all("encoder_hidden_states" in kw for _, kw in unet.calls)


def test_interrupt_stops_the_loop():
    scheduler, unet = _ddim(), StubUNet()
    pipe = types.SimpleNamespace(interrupt=False)

    def callback(p, i, t, tensors):
        p.interrupt = i == 1
        return {}

    denoise.run(
        unet, scheduler, torch.ones(1, 4, 8, 8), callback_on_step_end=callback, pipe=pipe, progress_bar=False
    )
    assert len(unet.calls) == 2


def test_cfg_doubles_the_batch_only_when_active():
    for scale, batch in ((5.0, 2), (1.0, 1)):
        unet = StubUNet()
        denoise.run(
            unet, _ddim(2), torch.ones(1, 4, 8, 8), guidance=ClassifierFreeGuidance(scale), progress_bar=False
        )
        assert [c[0][0] for c in unet.calls] == [batch, batch]


def test_missing_callback_tensor_is_an_error():
    with pytest.raises(ValueError, match="prompt_embeds"):
        denoise.run(
            StubUNet(), _ddim(), torch.ones(1, 4, 8, 8), callback_on_step_end=lambda *a: {},
            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"], progress_bar=False,
        )  # fmt: skip


def test_step_kwargs_only_what_the_scheduler_accepts():
    assert denoise.accepted_kwargs(DDIMScheduler.step, eta=0.3, generator=1) == {"eta": 0.3, "generator": 1}
    assert denoise.accepted_kwargs(EulerAncestralDiscreteScheduler.step, eta=0.3, generator=1) == {
        "generator": 1
    }
    assert denoise.accepted_kwargs(PNDMScheduler.step, eta=0.3, generator=1) == {}
    # PNDM would raise TypeError on eta; the loop drops it
    scheduler = PNDMScheduler(**SD_SCHEDULER, skip_prk_steps=True)
    scheduler.set_timesteps(3)
    denoise.run(StubUNet(), scheduler, torch.ones(1, 4, 8, 8), step_kwargs={"eta": 0.5}, progress_bar=False)


def test_progress_bar_can_be_disabled(capsys):
    denoise.run(StubUNet(), _ddim(3), torch.ones(1, 4, 8, 8), progress_bar=False)
    assert capsys.readouterr().err == ""
    denoise.run(StubUNet(), _ddim(3), torch.ones(1, 4, 8, 8), progress_bar={"disable": False})
    assert "3/3" in capsys.readouterr().err


def test_strength_closed_form_and_errors(caplog):
    scheduler = EulerAncestralDiscreteScheduler(**SD_SCHEDULER)
    scheduler.set_timesteps(10)
    timesteps, steps = denoise.strength_timesteps(scheduler, 10, 0.35)
    assert steps == 3 and timesteps.tolist() == scheduler.timesteps[7:].tolist()
    assert scheduler.begin_index == 7
    timesteps, steps = denoise.strength_timesteps(_ddim(2), 2, 0.1)
    assert steps == 0 and len(timesteps) == 0 and "leaves no denoising step" in caplog.text
    assert "raise `strength` or `num_inference_steps`" in caplog.text
    caplog.clear()
    trailing = DDIMScheduler(**SD_SCHEDULER, clip_sample=False, timestep_spacing="trailing")
    trailing.set_timesteps(2)  # 999 and 499: none below the 0.99 cut at timestep 10
    timesteps, steps = denoise.strength_timesteps(trailing, 2, 0.3, denoising_start=0.99)
    assert steps == 0 and len(timesteps) == 0
    assert (
        "denoising_start=0.99 leaves no denoising step out of num_inference_steps=2; lower it" in caplog.text
    )
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            denoise.strength_timesteps(_ddim(), 5, bad)


def test_set_timesteps_errors():
    for bad, err in ((0, ValueError), (-1, ValueError), (2.5, TypeError), (None, TypeError)):
        with pytest.raises(err, match="num_inference_steps"):
            denoise.set_timesteps(_ddim(), bad)
    with pytest.raises(ValueError, match="not both"):
        denoise.set_timesteps(_ddim(), 4, timesteps=[999, 500], sigmas=[1.0, 0.5])
    with pytest.raises(ValueError, match="does not support custom `sigmas`"):
        denoise.set_timesteps(_ddim(), sigmas=[1.0, 0.5])


def test_randn_tensor_generator_list_and_latent_checks():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    x = denoise.randn_tensor((2, 4, 8, 8), gens)
    torch.testing.assert_close(x[1:], torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="list of 2 generators.*batch size of 3"):
        denoise.randn_tensor((3, 4, 8, 8), [torch.Generator(), torch.Generator()])
    scheduler = EulerAncestralDiscreteScheduler(**SD_SCHEDULER)
    scheduler.set_timesteps(4)
    given = torch.ones(1, 4, 8, 8)
    torch.testing.assert_close(
        denoise.prepare_latents((1, 4, 8, 8), scheduler, latents=given), given * scheduler.init_noise_sigma
    )
    with pytest.raises(ValueError, match=r"shape \(1, 4, 9, 9\), expected \(1, 4, 8, 8\)"):
        denoise.prepare_latents((1, 4, 8, 8), scheduler, latents=torch.ones(1, 4, 9, 9))


@pytest.mark.parametrize(
    "name",
    [
        "DDIMScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
    ],
)
def test_loop_with_sfumato_schedulers_matches_diffusers(tiny_unet_cond, name):
    """Same loop, sfumato's scheduler on our side and diffusers' on theirs (txt2img and img2img)."""
    import diffusers

    import sfumato

    unet = tiny_unet_cond()
    theirs = getattr(diffusers, name)(**SD_SCHEDULER)
    pipe = _oracle(StableDiffusionImg2ImgPipeline, unet, theirs)
    neg, pos = _embeds(4)
    image_latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    for strength in (1.0, 0.5):
        expected = pipe(
            prompt_embeds=pos, negative_prompt_embeds=neg, image=image_latents, strength=strength, eta=0.3,
            num_inference_steps=4, output_type="latent", generator=torch.Generator().manual_seed(6),
        ).images  # fmt: skip
        # diffusers' SD pipelines patch clip_sample/steps_offset but leave them in `_use_default_values`
        config = {k: v for k, v in pipe.scheduler.config.items() if k != "_use_default_values"}
        scheduler = getattr(sfumato, name).from_config(config)
        generator = torch.Generator().manual_seed(6)
        denoise.set_timesteps(scheduler, 4)
        timesteps, _ = denoise.strength_timesteps(scheduler, 4, strength)
        noise = denoise.randn_tensor((1, 4, 8, 8), generator)
        latents = scheduler.add_noise(image_latents, noise, timesteps[:1])
        with torch.no_grad():
            out = denoise.run(
                unet, scheduler, latents, timesteps, guidance=ClassifierFreeGuidance(7.5),
                conditioning=Conditioning(encoder_hidden_states=torch.cat([neg, pos])),
                step_kwargs={"eta": 0.3, "generator": generator}, progress_bar=False,
            )  # fmt: skip
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["ddim", "heun"])
@pytest.mark.parametrize("denoising_start", [0.8, 0.5, 0.35])
def test_denoising_start_and_end_match_sdxl(name, denoising_start):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    theirs, ours = SCHEDULERS[name](), SCHEDULERS[name]()
    for s in (theirs, ours):
        s.set_timesteps(10)
    fake = types.SimpleNamespace(scheduler=theirs)
    expected = StableDiffusionXLImg2ImgPipeline.get_timesteps(
        fake, 10, 0.3, "cpu", denoising_start=denoising_start
    )
    timesteps, steps = denoise.strength_timesteps(ours, 10, 0.3, denoising_start=denoising_start)
    assert steps == expected[1] and timesteps.tolist() == expected[0].tolist()
    assert ours.__dict__.get("_begin_index") == theirs.__dict__.get("_begin_index")
    # the base model's end: exactly the timesteps the refiner does not run
    end = denoise.denoising_end_timesteps(ours, ours.timesteps, denoising_start)
    if name == "ddim":
        assert end.tolist() + timesteps.tolist() == ours.timesteps.tolist()
    assert denoise.denoising_end_timesteps(ours, ours.timesteps, None) is ours.timesteps


def test_nan_latents_are_reported():
    class NanUNet:
        def __call__(self, x, t, **kwargs):
            return torch.full_like(x, float("nan"))

    with pytest.raises(FloatingPointError, match="NaN or infinite latents"):
        denoise.run(NanUNet(), _ddim(2), torch.ones(1, 4, 8, 8), progress_bar=False)
