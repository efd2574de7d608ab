import math

import pytest
import torch

from sfumato.pipelines.guidance import ClassifierFreeGuidance, cat_for_cfg, cfg_combine, rescale_noise_cfg


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)


def test_cfg_closed_form_and_batch_order():
    uncond, cond = _pair()
    guidance = ClassifierFreeGuidance(guidance_scale=7.5)
    out = guidance(torch.cat([uncond, cond]))  # [negative, positive]
    torch.testing.assert_close(out, uncond + 7.5 * (cond - uncond))
    # g = 1 is the conditional prediction, g = 0 the unconditional one
    torch.testing.assert_close(cfg_combine(uncond, cond, 1.0), cond)
    torch.testing.assert_close(cfg_combine(uncond, cond, 0.0), uncond)


@pytest.mark.parametrize("scale", [1.0, 0.5, -3.0])
def test_no_unconditional_pass_when_scale_at_most_one(scale):
    guidance = ClassifierFreeGuidance(guidance_scale=scale)
    x = torch.randn(3, 4, 8, 8)
    assert not guidance.active
    assert guidance.batch(x) is x
    assert guidance(x) is x
    assert cat_for_cfg(None, x, guidance) is x


def test_batch_doubles_and_cat_order():
    guidance = ClassifierFreeGuidance(guidance_scale=2.0)
    neg, pos = torch.zeros(1, 77, 8), torch.ones(1, 77, 8)
    assert guidance.batch(pos).shape[0] == 2
    both = cat_for_cfg(neg, pos, guidance)
    assert both[0].sum() == 0 and both[1].min() == 1
    with pytest.raises(ValueError, match="negative"):
        cat_for_cfg(None, pos, guidance)


def test_disabled_flag_turns_cfg_off():
    assert not ClassifierFreeGuidance(guidance_scale=8.0, enabled=False).active


def test_rescale_closed_form():
    uncond, cond = _pair(1)
    eps_cfg = cfg_combine(uncond, cond, 5.0)
    phi = 0.7
    out = rescale_noise_cfg(eps_cfg, cond, phi)
    for b in range(2):
        ratio = cond[b].std() / eps_cfg[b].std()
        torch.testing.assert_close(out[b], phi * eps_cfg[b] * ratio + (1 - phi) * eps_cfg[b])
    # phi = 1: the result has exactly the conditional prediction's std per sample
    full = rescale_noise_cfg(eps_cfg, cond, 1.0)
    torch.testing.assert_close(full.flatten(1).std(1), cond.flatten(1).std(1))
    torch.testing.assert_close(rescale_noise_cfg(eps_cfg, cond, 0.0), eps_cfg)


def test_rescale_applied_by_guidance_object():
    uncond, cond = _pair(2)
    out = ClassifierFreeGuidance(guidance_scale=3.0, guidance_rescale=0.5)(torch.cat([uncond, cond]))
    torch.testing.assert_close(out, rescale_noise_cfg(cfg_combine(uncond, cond, 3.0), cond, 0.5))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_scale_rejected(bad):
    with pytest.raises(ValueError, match="guidance_scale"):
        ClassifierFreeGuidance(guidance_scale=bad)
    with pytest.raises(ValueError, match="guidance_rescale"):
        ClassifierFreeGuidance(guidance_rescale=bad)
    with pytest.raises(TypeError, match="guidance_scale"):
        ClassifierFreeGuidance(guidance_scale="7")


def test_matches_diffusers_rescale():
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg as oracle

    uncond, cond = _pair(3)
    eps_cfg = cfg_combine(uncond, cond, 7.5)
    torch.testing.assert_close(rescale_noise_cfg(eps_cfg, cond, 0.3), oracle(eps_cfg, cond, 0.3))
