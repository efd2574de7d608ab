"""Linear multistep method in sigma (k-diffusion `sample_lms`), coefficients by exact quadrature.

The coefficient of the k-th past derivative is the integral over [sigma_i, sigma_{i+1}] of its Lagrange
basis polynomial (degree < 4), so a 4-point Gauss-Legendre rule is exact; no scipy needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(4)  # exact for polynomials up to degree 7


def lms_coefficient(sigmas: Sequence[float], order: int, i: int, k: int) -> float:
    """Integral from sigmas[i] to sigmas[i+1] of the Lagrange basis for node i-k over nodes i..i-order+1."""
    a, b = float(sigmas[i]), float(sigmas[i + 1])
    tau = (b - a) / 2 * _NODES + (a + b) / 2
    basis = np.ones_like(tau)
    for j in range(order):
        if j != k:
            basis *= (tau - float(sigmas[i - j])) / (float(sigmas[i - k]) - float(sigmas[i - j]))
    return float((b - a) / 2 * np.dot(_WEIGHTS, basis))


def lms_step(x: Tensor, derivatives: list, coeffs: list) -> Tensor:
    """x + sum_k c_k d_{i-k}; `derivatives` oldest first, `coeffs` newest first."""
    return x + sum(c * d for c, d in zip(coeffs, reversed(derivatives)))
