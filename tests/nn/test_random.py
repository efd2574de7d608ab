"""randn_tensor draws the same numbers as diffusers' for the same generators."""

from __future__ import annotations

import pytest
import torch

from sfumato.nn.random import randn_tensor

torch_utils = pytest.importorskip("diffusers.utils.torch_utils")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seeds", [[0], [1, 2, 3], None])
def test_same_noise_as_diffusers(seeds, dtype):
    def gens():
        if seeds is None:
            return None
        g = [torch.Generator().manual_seed(s) for s in seeds]
        return g if len(g) > 1 else g[0]

    shape = (3 if seeds and len(seeds) == 3 else 2, 4, 5, 6)
    torch.manual_seed(9)
    expected = torch_utils.randn_tensor(shape, generator=gens(), device=torch.device("cpu"), dtype=dtype)
    torch.manual_seed(9)
    ours = randn_tensor(shape, generator=gens(), device="cpu", dtype=dtype)
    assert ours.dtype == dtype and torch.equal(ours, expected)


def test_generator_count_must_match_batch():
    with pytest.raises(ValueError, match="one per item"):
        randn_tensor((3, 2), generator=[torch.Generator(), torch.Generator()])
