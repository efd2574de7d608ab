"""The shared training loop: learning, checkpoints, exact resume, time limit."""

import torch
from torch.utils.data import TensorDataset

from sfumato.training.loop import TrainConfig, _lr_factor, latest_checkpoint, train


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    return TensorDataset(x, x @ w + 0.01 * torch.randn(256, 1, generator=g))


def _net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _objective(net):
    def loss(batch):
        x, y = batch
        noise = 0.01 * torch.randn_like(y)  # uses the global RNG, which a resume must restore
        return torch.nn.functional.mse_loss(net(x), y + noise)

    return loss


def _config(tmp_path, **kw):
    return TrainConfig(output_dir=tmp_path, batch_size=16, learning_rate=1e-2, progress=False, **kw)


def test_loss_goes_down(tmp_path):
    net = _net()
    result = train(
        _config(tmp_path, max_steps=60, save_every=1000), {"net": net}, _objective(net), _problem()
    )
    assert result.step == 60
    assert sum(result.losses[-10:]) / 10 < 0.25 * sum(result.losses[:10]) / 10


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = _net()
    train(
        _config(tmp_path / "a", max_steps=20, save_every=10),
        {"net": straight},
        _objective(straight),
        _problem(),
    )

    first = _net()
    train(_config(tmp_path / "b", max_steps=10, save_every=10), {"net": first}, _objective(first), _problem())
    assert latest_checkpoint(tmp_path / "b").name == "step-0000010"
    resumed = _net()  # a fresh process would start from scratch weights; the checkpoint restores them
    result = train(
        _config(tmp_path / "b", max_steps=20, save_every=10),
        {"net": resumed},
        _objective(resumed),
        _problem(),
    )
    assert result.step == 20 and len(result.losses) == 10
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_max_minutes_stops_early_and_saves(tmp_path):
    net = _net()
    result = train(
        _config(tmp_path, max_steps=10**6, max_minutes=0.002, save_every=10**6),
        {"net": net},
        _objective(net),
        _problem(),
    )
    assert result.stopped_by == "max_minutes" and result.step < 10**6
    if result.step:
        assert latest_checkpoint(tmp_path).name == f"step-{result.step:07d}"


def test_old_checkpoints_are_pruned(tmp_path):
    net = _net()
    train(
        _config(tmp_path, max_steps=40, save_every=10, keep_checkpoints=2),
        {"net": net},
        _objective(net),
        _problem(),
    )
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-0000030", "step-0000040"]


def _run(path, **kw):
    net = _net()
    train(_config(path, **kw), {"net": net}, _objective(net), _problem())
    return [p.detach().clone() for p in net.parameters()]


def test_ema_is_returned_and_resumes_exactly(tmp_path):
    raw = _run(tmp_path / "raw", max_steps=20, save_every=10)
    instant = _run(
        tmp_path / "instant", max_steps=20, save_every=10, ema_decay=1e-9
    )  # average = last weights
    assert all(torch.equal(a, b) for a, b in zip(raw, instant))
    straight = _run(tmp_path / "a", max_steps=20, save_every=10, ema_decay=0.9)
    assert not all(torch.equal(a, b) for a, b in zip(raw, straight))
    _run(tmp_path / "b", max_steps=10, save_every=10, ema_decay=0.9)
    resumed = _run(tmp_path / "b", max_steps=20, save_every=10, ema_decay=0.9)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


def test_cosine_schedule_endpoints(tmp_path):
    factor = _lr_factor(_config(tmp_path, max_steps=110, warmup_steps=10, lr_schedule="cosine"))
    assert factor(0) == 0.1 and factor(9) == 1.0 and factor(10) == 1.0
    assert abs(factor(60) - 0.55) < 1e-9 and abs(factor(110) - 0.1) < 1e-9
    constant = _lr_factor(_config(tmp_path, max_steps=110, warmup_steps=10))
    assert constant(100) == 1.0
