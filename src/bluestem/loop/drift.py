"""Specimen drift between scans: measured by cross-correlating a tracking image with a
reference image of the same field, and extrapolated to the next scan.

The shift is the sub-pixel peak of the cross-correlation (Guizar-Sicairos, Thurman &
Fienup, Opt. Lett. 33, 156 (2008), as in :mod:`bluestem.loop._xcorr`) of the two
mean-subtracted images, each apodized by a Tukey window and zero-padded to twice its size
so the correlation does not wrap around. ``img(r) = ref(r − shift)`` is ``+shift``: the
content moved towards +y, +x. A specimen that drifted by **d** moves the content of a
scan at a fixed scan centre by **d** (the scan sees the specimen point r − d at r).

The drift of the next scan is extrapolated from the last few measurements by a
least-squares straight line in time (a constant velocity: a thermal drift is smooth over
the minute of a survey); with one measurement it is held constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bluestem.loop._xcorr import apodize, pad_to, register

__all__ = ["bin_image", "extrapolate", "measure_shift", "shift_to_scan"]

#: Most rounds of the window-following refinement of a shift.
REFINE_ROUNDS = 4


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` × ``factor`` blocks (each side a multiple of ``factor``): the
    same pixel centres as a scan of 1 / ``factor`` the positions over the same field."""
    data = np.asarray(image, dtype=np.float64)
    ny, nx = data.shape
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 \
            or ny % factor or nx % factor:  # fmt: skip
        raise ValueError(f"factor={factor!r}: allowed an integer >= 1 dividing the image "
                         f"shape {data.shape}")  # fmt: skip
    return data.reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


def measure_shift(
    reference: np.ndarray, image: np.ndarray, *, upsample: int = 20
) -> tuple[tuple[float, float], float]:
    """The shift of ``image`` against ``reference`` (same shape), pixels.

    Returns
    -------
    shift : (dy, dx)
        ``image(r) ≈ reference(r − shift)``.
    peak : float
        Normalised cross-correlation at the peak (1: identical up to the shift; below
        ~0.3 the match is doubtful).

    Raises
    ------
    ValueError
        The shapes differ, an image is not 2-D, or it holds non-finite values.
    """
    ref = np.asarray(reference, dtype=np.float64)
    img = np.asarray(image, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != img.shape or min(ref.shape) < 4:
        raise ValueError(f"reference {ref.shape} and image {img.shape}: allowed two 2-D "
                         "images of one shape, each side >= 4")  # fmt: skip
    if not (np.isfinite(ref).all() and np.isfinite(img).all()):
        raise ValueError("the reference or the image holds NaN or inf (a position not "
                         "received?): allowed finite images")  # fmt: skip
    # A window common to both images pulls the peak towards zero shift (the window
    # correlates with itself); the image's window follows the estimated shift instead,
    # so the same content is weighted alike: a few rounds converge.
    ny, nx = ref.shape
    padded = (2 * ny, 2 * nx)
    window = apodize(ref.shape)
    spec_ref = np.fft.fft2(pad_to((ref - ref.mean()) * window, padded))
    shift = np.zeros(2)
    peak = 0.0
    for _ in range(REFINE_ROUNDS):
        moved = apodize(ref.shape, box=((shift[0], ny + shift[0]), (shift[1], nx + shift[1])))
        spec_img = np.fft.fft2(pad_to((img - img.mean()) * moved, padded))
        shifts, peaks = register(spec_img[None], spec_ref, upsample=upsample,
                                 max_shift=min(ref.shape) / 2)  # fmt: skip
        done = np.abs(shifts[0] - shift).max() < 1e-3
        shift, peak = shifts[0], float(peaks[0])
        if done:
            break
    return (float(shift[0]), float(shift[1])), peak


def shift_to_scan(
    dy: float, dx: float, step: tuple[float, float], rotation: float
) -> tuple[float, float]:
    """A shift of a scan image (pixels) in the specimen frame, in the unit of ``step``
    (the scan's rotation ``rotation``, rad, applied as the scan generator does)."""
    yy, xx = float(dy) * step[0], float(dx) * step[1]
    c, s = math.cos(rotation), math.sin(rotation)
    return s * xx + c * yy, c * xx - s * yy


def extrapolate(
    times: Sequence[float], drifts: Sequence[Sequence[float]], at: float, *, window: int = 3
) -> tuple[float, float]:
    """The drift ``(y, x)`` at time ``at`` from a straight-line fit to the last
    ``window`` (>= 2) measurements ``drifts[i]`` at ``times[i]`` (one measurement: held
    constant; none: zero)."""
    if len(times) != len(drifts):
        raise ValueError(f"{len(times)} times for {len(drifts)} drifts: allowed one each")
    if not times:
        return 0.0, 0.0
    t = np.asarray(times[-max(2, int(window)) :], dtype=np.float64)
    d = np.asarray(drifts[-len(t) :], dtype=np.float64).reshape(len(t), 2)
    if len(t) == 1 or np.ptp(t) <= 0:
        return float(d[-1, 0]), float(d[-1, 1])
    a = np.stack([np.ones_like(t), t - t[-1]], axis=1)
    coef, *_ = np.linalg.lstsq(a, d, rcond=None)
    out = coef[0] + coef[1] * (float(at) - t[-1])
    return float(out[0]), float(out[1])
