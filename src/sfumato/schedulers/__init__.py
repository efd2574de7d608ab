"""Noise schedulers with diffusers' names, config keys and step-for-step equal outputs.

Math locals follow the papers: x (noisy sample), x0 (clean estimate), eps (noise), v (velocity),
alpha_bar (cumulative product of 1 - beta), sigma / sigma_next (noise levels of the current and
next step; VE form x = x0 + sigma * eps unless a module says otherwise), h (log-SNR step size).

Layout: `schedules.py` (betas, sigmas, grids), `prediction.py` (model output -> x0 / eps),
`solvers/` (pure update rules), one thin class per diffusers scheduler, `names.py` (A1111 names).
Attributes are imported on first use, so importing this package does not import torch.
"""

from __future__ import annotations

from .._lazy import lazy_attributes
from ._names import NAMES, PACKAGE_NAMES

_ALL = {**NAMES, **PACKAGE_NAMES}
__all__ = sorted(_ALL)

__getattr__, __dir__ = lazy_attributes(__name__, _ALL)
