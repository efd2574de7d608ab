"""Sinusoidal timestep features and the time MLP against diffusers' functions."""

from __future__ import annotations

import pytest
import torch

from sfumato.nn.embeddings import TimestepEmbedding, timestep_embedding

diffusers_embeddings = pytest.importorskip("diffusers.models.embeddings")


@pytest.mark.parametrize("dim", [320, 7, 256])
@pytest.mark.parametrize(("flip", "shift"), [(True, 0), (False, 1), (True, 1)])
def test_timestep_embedding_matches_diffusers(dim, flip, shift):
    t = torch.tensor([0, 1, 17, 500.5, 999])
    expected = diffusers_embeddings.get_timestep_embedding(
        t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift
    )
    torch.testing.assert_close(timestep_embedding(t, dim, flip, shift), expected, rtol=0, atol=1e-6)


def test_timestep_embedding_closed_form():
    # t = 0: sin parts are 0 and cos parts 1; the first frequency is 1 (exp(0)), so t=1 gives sin(1)
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 8, flip_sin_to_cos=False, downscale_freq_shift=1)
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert emb[1, 0].item() == pytest.approx(torch.sin(torch.tensor(1.0)).item())


def test_timestep_embedding_rejects_2d_input():
    with pytest.raises(ValueError, match="1-D"):
        timestep_embedding(torch.zeros(2, 1), 8)


def test_time_mlp_and_cond_proj_match_diffusers():
    torch.manual_seed(0)
    ref = diffusers_embeddings.TimestepEmbedding(8, 16, cond_proj_dim=3, post_act_fn="silu")
    ours = TimestepEmbedding(8, 16, cond_proj_dim=3, post_act_fn="silu")
    ours.load_state_dict(ref.state_dict())
    x, c = torch.randn(2, 8), torch.randn(2, 3)
    torch.testing.assert_close(ours(x, c), ref(x, c))
    with pytest.raises(ValueError, match="time_cond_proj_dim"):
        TimestepEmbedding(8, 16)(x, c)
