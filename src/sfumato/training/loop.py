"""One training loop for every sfumato training task, on `accelerate`.

The same code runs on one CPU here and on many GPUs or nodes with `accelerate launch`. A task hands
the loop its trainable modules and an `objective(batch) -> loss`; the loop owns the optimizer, the
data order, checkpoints (`output_dir/checkpoints/step-NNNNNNN`, with optimizer and RNG state) and
resuming, so an interrupted run continues exactly where it stopped.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainConfig:
    output_dir: str | Path
    max_steps: int = 1000
    max_minutes: float | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    save_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    num_workers: int = 0
    mixed_precision: str = "no"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)
    stopped_by: str = "max_steps"


class ResumableSampler(Sampler[int]):
    """Indices in a seeded order, a fresh permutation each epoch, starting at any position."""

    def __init__(self, length: int, seed: int, start: int = 0) -> None:
        if length < 1:
            raise ValueError("the dataset is empty")
        self.length, self.seed, self.start = length, seed, start

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.length)
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + epoch))
            for index in order[offset:].tolist():
                yield index
                position += 1

    def __len__(self) -> int:
        return 2**62  # endless; the loop stops by steps or minutes


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    folders = sorted((Path(output_dir) / CHECKPOINTS).glob("step-*"))
    complete = [f for f in folders if (f / STATE_FILE).is_file()]
    return complete[-1] if complete else None


def train(
    config: TrainConfig,
    modules: Mapping[str, torch.nn.Module],
    objective: Callable[[Any], torch.Tensor],
    dataset: Dataset,
    collate_fn: Callable | None = None,
    resume: bool = True,
) -> TrainResult:
    """Minimise `objective` over `dataset` for `config.max_steps` (or `max_minutes`); resumable."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(config.seed)
    output = Path(config.output_dir)
    checkpoint = latest_checkpoint(output) if resume else None
    start = json.loads((checkpoint / STATE_FILE).read_text())["step"] if checkpoint else 0

    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no module has parameters with requires_grad=True")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(config.warmup_steps, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    sampler = ResumableSampler(len(dataset), config.seed, start=start * config.batch_size)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=config.num_workers,
        drop_last=True,
    )
    names = list(modules)
    prepared = accelerator.prepare(*modules.values(), optimizer, schedule, loader)
    wrapped, optimizer, schedule, loader = prepared[: len(names)], *prepared[len(names) :]
    for module in wrapped:
        module.train()
    # The first batch is fetched before the saved RNG state is restored: starting the (prepared)
    # loader draws a seed from the global RNG, and must do so at the same point in every run so a
    # resumed run draws exactly the noise an uninterrupted one would.
    batches = iter(loader)
    batches = itertools.chain([next(batches)], batches)
    if checkpoint:
        accelerator.load_state(str(checkpoint))
        logger.info("resumed from %s at step %d", checkpoint, start)

    result = _run(config, accelerator, wrapped, objective, optimizer, schedule, batches, start, output)
    accelerator.wait_for_everyone()
    return result


def _run(config, accelerator, modules, objective, optimizer, schedule, batches, start, output) -> TrainResult:
    from tqdm.auto import tqdm

    result = TrainResult(step=start)
    deadline = time.monotonic() + 60 * config.max_minutes if config.max_minutes else math.inf
    bar = tqdm(
        total=config.max_steps,
        initial=start,
        desc="training",
        unit="step",
        disable=not (config.progress and accelerator.is_main_process),
    )
    while result.step < config.max_steps:
        if time.monotonic() > deadline:
            result.stopped_by = "max_minutes"
            break
        with accelerator.accumulate(*modules):
            loss = objective(next(batches))
            accelerator.backward(loss)
            if config.grad_clip and accelerator.sync_gradients:
                accelerator.clip_grad_norm_([p for m in modules for p in m.parameters()], config.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        result.step += 1
        result.losses.append(loss.detach().item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(result.losses[-20:]) / len(result.losses[-20:]):.4f}")
        if result.step % config.save_every == 0:
            save_checkpoint(accelerator, output, result.step, config)
    bar.close()
    if result.step % config.save_every and result.step > start:
        save_checkpoint(accelerator, output, result.step, config)
    return result


def save_checkpoint(accelerator: Any, output: Path, step: int, config: TrainConfig) -> Path:
    """Write the full training state; the state file goes last, so a partial folder is never resumed."""
    folder = output / CHECKPOINTS / f"step-{step:07d}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        state = {"step": step, "config": {k: str(v) for k, v in asdict(config).items()}}
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        old = sorted((output / CHECKPOINTS).glob("step-*"))[: -config.keep_checkpoints]
        for stale in old:
            shutil.rmtree(stale, ignore_errors=True)
    return folder
