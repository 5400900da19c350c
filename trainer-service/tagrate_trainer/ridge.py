"""Ridge regression for every penalty from one eigendecomposition, with the
penalty chosen by exact leave-one-out error (LOO; generalised
cross-validation, GCV, is there too).

On centred features ``X`` (n x d) and centred ratings ``y``, the ridge
weights for penalty ``alpha`` are ``(XᵀX + alpha I)⁻¹ Xᵀ y``. One
eigendecomposition of the smaller Gram matrix (``X Xᵀ`` when n < d, the
kernel form, else ``XᵀX``) gives them for every ``alpha`` in O(n·d) each,
and with them the GCV score (Golub, Heath & Wahba 1979)::

    GCV(alpha) = mean((y - ŷ)²) / (1 - (df + 1) / n)²,   df = Σ s / (s + alpha)

where ``s`` are the eigenvalues and the ``+ 1`` counts the intercept (the
ratings' mean, since the features are centred), and the exact LOO error
``mean((r_i / (1 - H_ii))²)`` from the hat matrix's diagonal
(``H_ii = Σ_k U_ik² s_k / (s_k + alpha) + 1/n`` in the kernel form). Neither
needs refitting.

In torch, on the CPU thread pool the trainer already uses (see
:meth:`tagrate_common.vision.rating_heads.RatingHead.predict` for why not
numpy's).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Penalties tried on standardised features (d = 1280 columns of unit
# variance, so the Gram matrix's eigenvalues are of order n·d / rank). A
# wide log grid costs little: every penalty reuses one decomposition.
GCV_ALPHAS = tuple(float(10.0**k) for k in np.arange(-1.0, 6.51, 0.25))


class Ridge:
    """Ridge solutions of ``x`` (n, d; centred columns) and ``y`` for any
    penalty. The intercept is ``y``'s mean."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
        self.y_mean = float(np.mean(y))
        self._y = torch.from_numpy(np.asarray(y, dtype=np.float64) - self.y_mean)
        self.n, self.d = xt.shape
        self._x = xt
        self._kernel = self.n < self.d
        gram = xt @ xt.T if self._kernel else xt.T @ xt
        eigenvalues, self._vectors = torch.linalg.eigh(gram)
        self._eigenvalues = eigenvalues.clamp(min=0.0)
        self._projected = self._vectors.T @ (self._y if self._kernel else xt.T @ self._y)
        self._xv: torch.Tensor | None = None

    def weights(self, alpha: float) -> np.ndarray:
        """The (d,) weight vector for penalty ``alpha``."""
        scaled = self._vectors @ (self._projected / (self._eigenvalues + alpha))
        return (self._x.T @ scaled if self._kernel else scaled).numpy()

    def gcv(self, alpha: float) -> float:
        """The GCV score of penalty ``alpha`` (lower is better); infinite
        when the fit has as many degrees of freedom as ratings."""
        shrink = self._eigenvalues / (self._eigenvalues + alpha)
        if self._kernel:
            fitted = self._vectors @ (shrink * self._projected)
        else:
            fitted = self._x @ (self._vectors @ (self._projected / (self._eigenvalues + alpha)))
        residual = float(((self._y - fitted) ** 2).mean())
        denominator = 1.0 - (float(shrink.sum()) + 1.0) / self.n
        return residual / denominator**2 if denominator > 1e-9 else math.inf

    def loo_residuals(self, alpha: float) -> np.ndarray:
        """Each rating minus the prediction of the fit without it (the
        intercept refitted too): ``r_i / (1 - H_ii)``, exactly."""
        if self._kernel:
            shrink = self._eigenvalues / (self._eigenvalues + alpha)
            fitted = self._vectors @ (shrink * self._projected)
            leverage = (self._vectors**2) @ shrink
        else:
            if self._xv is None:
                self._xv = self._x @ self._vectors
            inverse = 1.0 / (self._eigenvalues + alpha)
            fitted = self._xv @ (self._projected * inverse)
            leverage = (self._xv**2) @ inverse
        denominator = (1.0 - leverage - 1.0 / self.n).clamp(min=1e-9)
        return ((self._y - fitted) / denominator).numpy()

    def loo(self, alpha: float) -> float:
        """The exact leave-one-out mean squared error of penalty ``alpha``."""
        return float(np.mean(self.loo_residuals(alpha) ** 2))

    def best_alpha(self, alphas: tuple[float, ...] = GCV_ALPHAS) -> float:
        """The penalty with the lowest leave-one-out error; a tie goes to
        the stronger. (Exact LOO rather than GCV: with n < d, GCV's score
        keeps falling toward the interpolating end of the grid on the
        benchmark's real features, where held-out figures are worse; see
        bench/learning/.)"""
        scores = {alpha: self.loo(alpha) for alpha in alphas}
        return min(scores, key=lambda a: (scores[a], -a))
