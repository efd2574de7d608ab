"""Seam blending of tiled VAE passes against diffusers' loop version."""

from __future__ import annotations

import pytest
import torch

from sfumato.models.tiling import blend_h, blend_v, tiled_apply

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("extent", [1, 3, 8])
def test_blend_matches_diffusers(extent):
    vae = diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 2, 6, 5, generator=g), torch.randn(1, 2, 6, 5, generator=g)
    torch.testing.assert_close(
        blend_v(a, b.clone(), extent), vae.blend_v(a, b.clone(), extent), rtol=0, atol=0
    )
    torch.testing.assert_close(
        blend_h(a, b.clone(), extent), vae.blend_h(a, b.clone(), extent), rtol=0, atol=0
    )


def test_identity_tiles_reassemble_the_input():
    x = torch.randn(1, 2, 20, 13)
    # blending a function's overlapping copies of the same pixels changes nothing
    torch.testing.assert_close(tiled_apply(x, lambda t: t, tile=8, stride=6, blend=2, keep=6), x)
