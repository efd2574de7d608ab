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
from typing import Any, Literal

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
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after warmup; cosine ends at 10% of the rate
    ema_decay: float | None = None  # keep an exponential moving average of the weights (None: off)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) (e.g. 0.999) or None, got {self.ema_decay}")


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


class EMA:
    """Exponential moving average of parameters (Polyak averaging), saved and restored with checkpoints.

    The effective decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates, so the average is not
    dominated by the random initial weights in short runs.
    """

    def __init__(self, params: list[torch.Tensor], decay: float) -> None:
        self.params, self.decay, self.updates = params, decay, 0
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for s, saved in zip(self.shadow, state["shadow"]):
                s.copy_(saved)
        self.updates = int(state["updates"])


def _lr_factor(config: TrainConfig) -> Callable[[int], float]:
    warmup = max(config.warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup or config.lr_schedule == "constant":
            return min(1.0, (step + 1) / warmup)
        progress = min(1.0, (step - warmup) / max(config.max_steps - warmup, 1))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


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
    """Minimise `objective` over `dataset` for `config.max_steps` (or `max_minutes`); resumable.

    With `config.ema_decay`, the modules hold the averaged weights when this returns (checkpoints keep
    both the raw weights and the average, so a resumed run continues both).
    """
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
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
    ema = EMA(params, config.ema_decay) if config.ema_decay else None
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
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
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

    result = _run(config, accelerator, wrapped, objective, optimizer, schedule, batches, start, output, ema)
    accelerator.wait_for_everyone()
    if ema is not None:  # the caller exports the averaged weights; checkpoints keep both
        ema.copy_to_params()
    return result


def _run(
    config, accelerator, modules, objective, optimizer, schedule, batches, start, output, ema
) -> TrainResult:
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
        if ema is not None:
            ema.update()
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
