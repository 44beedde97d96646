"""The linear model of the BF parallax: ``displacement = −(M θ + t) − C3 |θ|² θ``.

:func:`shift_matrix` builds M from C1 and A1 (x, y order; see
:mod:`bluestem.loop.parallax` for the derivation and conventions), :func:`fit_shift_matrix`
fits it to measured displacements by weighted least squares, and ``_robust_fit`` drops
outlying bins. numpy only.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["AberrationEstimate", "fit_shift_matrix", "shift_matrix"]


def shift_matrix(c1: float, a1: float = 0.0, a1_angle: float = 0.0) -> np.ndarray:
    """The parallax matrix M (x, y order, m/rad): BF image shift ``−M θ``."""
    a, b = a1 * math.cos(2 * a1_angle), a1 * math.sin(2 * a1_angle)
    return np.array([[c1 + a, b], [b, c1 - a]])


def _design(theta: np.ndarray, fit_c3: bool) -> np.ndarray:
    """Rows (x components, then y) of ``−displacement`` in (C1, a, b, tx, ty[, C3])."""
    ty, tx = theta[:, 0], theta[:, 1]
    z, o, t2 = np.zeros_like(tx), np.ones_like(tx), tx * tx + ty * ty
    cols_x, cols_y = [tx, tx, ty, o, z], [ty, -ty, tx, z, o]
    if fit_c3:
        cols_x.append(t2 * tx)
        cols_y.append(t2 * ty)
    return np.concatenate([np.stack(cols_x, 1), np.stack(cols_y, 1)])


def _model(theta: np.ndarray, params: np.ndarray, c3: float) -> np.ndarray:
    """Model displacement (y, x) in m: ``−(M θ + t) − C3 |θ|² θ``."""
    n = theta.shape[0]
    v = -_design(theta, False) @ np.asarray(params[:5], np.float64)
    t2 = theta[:, 0] ** 2 + theta[:, 1] ** 2
    return np.stack([v[n:] - c3 * t2 * theta[:, 0], v[:n] - c3 * t2 * theta[:, 1]], axis=1)


def fit_shift_matrix(
    theta: np.ndarray,
    displacement: np.ndarray,
    weights: np.ndarray | None = None,
    c3: float | None = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of ``displacement = −(M θ + t) − C3 |θ|² θ``.

    Parameters
    ----------
    theta : ndarray (n, 2)
        Angles (θy, θx), rad.
    displacement : ndarray (n, 2)
        Displacements (y, x) in m in the detector-aligned (specimen) frame.
    weights : ndarray (n,), optional
        Weights (default 1).
    c3 : float or None
        Known C3 in m, or None to fit it.

    Returns
    -------
    params : ndarray
        (C1, A1 cos 2φ_A1, A1 sin 2φ_A1, tx, ty[, C3]).
    cov : ndarray
        Their covariance, scaled by the weighted residual variance.
    residuals : ndarray (n, 2)
        Measured minus fitted displacement (y, x), m.
    """
    th = np.asarray(theta, np.float64)
    d = np.asarray(displacement, np.float64)
    n = th.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    a = _design(th, c3 is None)
    rhs = -np.concatenate([d[:, 1], d[:, 0]])
    if c3 is not None:
        t2 = th[:, 0] ** 2 + th[:, 1] ** 2
        rhs = rhs - c3 * np.concatenate([t2 * th[:, 1], t2 * th[:, 0]])
    ww = np.concatenate([w, w])
    sw = np.sqrt(ww)
    params = np.linalg.lstsq(a * sw[:, None], rhs * sw, rcond=None)[0]
    r = rhs - a @ params
    dof = max(1, int(np.count_nonzero(ww)) - a.shape[1])
    cov = np.linalg.pinv((a * ww[:, None]).T @ a) * float(np.sum(ww * r * r) / dof)
    return params, cov, -np.stack([r[n:], r[:n]], axis=1)


def _robust_fit(theta, disp, weights, c3):
    """Fit; drop bins beyond 4 robust sigmas (weight 0); refit (at most three rounds)."""
    if not np.any(weights > 0):
        weights = np.ones_like(weights)
    for _ in range(3):
        params, cov, res = fit_shift_matrix(theta, disp, weights, c3)
        dist = np.hypot(res[:, 0], res[:, 1])
        good = weights > 0
        cut = 4.0 * 1.4826 * np.median(dist[good]) if good.any() else np.inf
        reject = good & (dist > cut)
        if not reject.any():
            break
        weights = np.where(reject, 0.0, weights)
    return params, cov, res, weights


class AberrationEstimate:
    """What every C1/A1 fit derives from its fields ``c1``, ``c1_offset``, ``a1`` and
    ``a1_angle`` (mixed into :class:`~bluestem.loop.parallax.ParallaxFit` and
    :class:`~bluestem.loop.overlap.OverlapFit`)."""

    c1: float
    c1_offset: float
    a1: float
    a1_angle: float

    @property
    def matrix(self) -> np.ndarray:
        """The fitted M of the acquisition (``c1_offset`` included), x-y order, m/rad."""
        return shift_matrix(self.c1 + self.c1_offset, self.a1, self.a1_angle)

    @property
    def a1_vector(self) -> np.ndarray:
        """(A1 cos 2φ_A1, A1 sin 2φ_A1), m: corrections of A1 add as vectors."""
        return self.a1 * np.array([math.cos(2 * self.a1_angle), math.sin(2 * self.a1_angle)])
