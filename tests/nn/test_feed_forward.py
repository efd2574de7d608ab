"""The feed-forward block on CPU: long inputs in chunks of rows, same values as in one piece."""

from __future__ import annotations

import torch

from sfumato.nn import transformer
from sfumato.nn.transformer import CPU_FEED_FORWARD_ROWS, FeedForward


def whole(ff: FeedForward, x: torch.Tensor) -> torch.Tensor:
    """The textbook computation, with no shortcut: linear, split, value * gelu(gate), linear."""
    h, gate = ff.net[0].proj(x).chunk(2, dim=-1)
    return ff.net[2](h * torch.nn.functional.gelu(gate))


def test_long_inputs_go_in_chunks_of_rows_with_the_same_values(monkeypatch) -> None:
    torch.manual_seed(0)
    ff = FeedForward(16).eval()
    rows = 2 * CPU_FEED_FORWARD_ROWS + 37  # a partial last chunk
    x = torch.randn(1, rows, 16)
    calls = []
    original = FeedForward._forward
    monkeypatch.setattr(
        FeedForward, "_forward", lambda self, t: calls.append(t.shape[0]) or original(self, t)
    )
    with torch.no_grad():
        out = ff(x)
        expected = whole(ff, x)
    assert calls == [CPU_FEED_FORWARD_ROWS, CPU_FEED_FORWARD_ROWS, 37]
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_short_inputs_training_and_autograd_run_in_one_piece(monkeypatch) -> None:
    torch.manual_seed(0)
    ff = FeedForward(16)
    long = torch.randn(2, CPU_FEED_FORWARD_ROWS + 1, 16)
    calls = []
    original = FeedForward._forward
    monkeypatch.setattr(
        FeedForward, "_forward", lambda self, t: calls.append(t.shape[:-1]) or original(self, t)
    )
    with torch.no_grad():
        ff.eval()(long[:, :CPU_FEED_FORWARD_ROWS])  # 2 x 1024 rows: whole
        ff.train()(long)  # training: dropout draws once over all rows
    x = long.clone().requires_grad_()
    out = ff.eval()(x)  # autograd: the graph of the plain computation
    out.sum().backward()
    assert calls == [(2, CPU_FEED_FORWARD_ROWS), long.shape[:-1], long.shape[:-1]]
    reference = long.clone().requires_grad_()
    whole(ff, reference).sum().backward()
    torch.testing.assert_close(x.grad, reference.grad)


def test_gated_gelu_shortcut_only_without_a_graph() -> None:
    torch.manual_seed(0)
    geglu = transformer.GEGLU(8, 32)
    x = torch.randn(4, 8, requires_grad=True)
    out = geglu(x)
    assert out.grad_fn is not None and "Mul" in type(out.grad_fn).__name__
    with torch.no_grad():
        h, gate = geglu.proj(x).chunk(2, dim=-1)
        torch.testing.assert_close(geglu(x), h * torch.nn.functional.gelu(gate), rtol=0, atol=0)
