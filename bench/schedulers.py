"""Time per `step` of every sfumato scheduler against diffusers (1x4x64x64 latent, 25 steps).

Runs are interleaved (ours, theirs, ours, ...) so background load hits both alike; the table shows the
median time per step over `--repeats` full loops and the ratio ours / diffusers (< 1 means faster).

    python bench/schedulers.py [--steps 25] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import sfumato.schedulers as S

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
CASES = {
    "DDPMScheduler": SD,
    "DDIMScheduler": SD,
    "PNDMScheduler": {**SD, "skip_prk_steps": True},
    "LMSDiscreteScheduler": SD,
    "EulerDiscreteScheduler": SD,
    "EulerAncestralDiscreteScheduler": SD,
    "HeunDiscreteScheduler": SD,
    "KDPM2DiscreteScheduler": SD,
    "KDPM2AncestralDiscreteScheduler": SD,
    "DPMSolverMultistepScheduler": SD,
    "DPMSolverMultistepScheduler (2M SDE Karras)": {
        **SD,
        "algorithm_type": "sde-dpmsolver++",
        "use_karras_sigmas": True,
    },
    "DPMSolverSinglestepScheduler": SD,
    "UniPCMultistepScheduler": SD,
    "DEISMultistepScheduler": SD,
    "LCMScheduler": {},
    "FlowMatchEulerDiscreteScheduler": {"shift": 3.0},
}


def loop_time(scheduler, steps: int, x0: torch.Tensor, eps: torch.Tensor) -> float:
    """Seconds per step of a full loop (set_timesteps excluded) with a fixed 'model output'."""
    scheduler.set_timesteps(steps if type(scheduler).__name__ != "LCMScheduler" else 8)
    generator = torch.Generator().manual_seed(0)
    takes_generator = "generator" in scheduler.step.__code__.co_varnames
    kwargs = {"generator": generator} if takes_generator else {}
    x = x0.clone()
    start = time.perf_counter()
    for t in scheduler.timesteps:
        if hasattr(scheduler, "scale_model_input"):
            scheduler.scale_model_input(x, t)
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
    return (time.perf_counter() - start) / len(scheduler.timesteps)


def main() -> None:
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x0 = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(2)) * 0.1
    rows = []
    for label, config in CASES.items():
        name = label.split(" ")[0]
        ours_times, theirs_times = [], []
        loop_time(getattr(S, name)(**config), args.steps, x0, eps)  # warm-up (first-call costs)
        loop_time(getattr(diffusers, name)(**config), args.steps, x0, eps)
        for r in range(args.repeats):
            # alternate who runs first so drift in background load hits both alike
            for which in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
                lib, times = (S, ours_times) if which == "ours" else (diffusers, theirs_times)
                times.append(loop_time(getattr(lib, name)(**config), args.steps, x0, eps))
        ours, theirs = statistics.median(ours_times), statistics.median(theirs_times)
        rows.append((label, ours * 1e6, theirs * 1e6, ours / theirs))
    width = max(len(r[0]) for r in rows)
    print(f"{'scheduler':<{width}}  {'sfumato us/step':>16}  {'diffusers us/step':>18}  {'ratio':>6}")
    for label, ours, theirs, ratio in rows:
        print(f"{label:<{width}}  {ours:>16.1f}  {theirs:>18.1f}  {ratio:>6.2f}")


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main()
