"""Private helpers of :mod:`bluestem.loop.parallax`: BF binning, sub-pixel registration,
the coarse tcBF search.

Registration follows Guizar-Sicairos, Thurman & Fienup, "Efficient subpixel image
registration algorithms", Opt. Lett. 33, 156 (2008): the integer peak of the FFT
cross-correlation, then the cross-correlation evaluated by a matrix-multiply DFT on a grid
``1 / upsample`` pixel fine over 1.5 pixels around it, then a parabola through the finest
peak. Written here from the paper, batched over a stack of images.

Conventions: images are (..., ny, nx); a shift is (dy, dx) in pixels and
``img(r) = ref(r - shift)`` is measured as ``+shift`` (content moved towards +y, +x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BrightFieldBins",
    "apodize",
    "bandpass",
    "bin_bright_field",
    "bright_field_disc",
    "coarse_search",
    "fourier_shift",
    "pad_to",
    "register",
    "register_round",
    "tcbf_power",
]


def _freqs(n: int) -> np.ndarray:
    """Signed integer frequencies of an n-point DFT, in FFT order."""
    return np.fft.fftfreq(n) * n


def _tukey(n: int, start: float, stop: float, taper: float) -> np.ndarray:
    """1-D window over n samples: 0 outside [start, stop), cosine tapers over ``taper``
    of the width at both ends, 1 between."""
    x = np.arange(n) + 0.5
    m = max(1.0, taper * (stop - start))
    rise = np.clip((x - start) / m, 0.0, 1.0)
    fall = np.clip((stop - x) / m, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * rise)) * (0.5 - 0.5 * np.cos(np.pi * fall))


def apodize(
    shape: tuple[int, int],
    taper: float = 0.15,
    box: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> np.ndarray:
    """Separable Tukey window of ``shape`` over ``box`` ((y0, y1), (x0, x1)) pixels
    (default: all of it), tapered over ``taper`` of the box on each side."""
    (y0, y1), (x0, x1) = box or ((0, shape[0]), (0, shape[1]))
    return np.outer(_tukey(shape[0], y0, y1, taper), _tukey(shape[1], x0, x1, taper))


def bandpass(
    shape: tuple[int, int], spacing: tuple[float, float], low: float, high: float
) -> np.ndarray:
    """Gaussian band-pass in FFT order: ``(1 - exp(-q²/2 low²)) exp(-q²/2 high²)``, with
    ``q`` in the units of ``1 / spacing`` (spacing (dy, dx) of the pixels)."""
    qy = np.fft.fftfreq(shape[0], d=spacing[0])[:, None]
    qx = np.fft.fftfreq(shape[1], d=spacing[1])[None, :]
    q2 = qy * qy + qx * qx
    out = np.exp(-q2 / (2.0 * high * high))
    if low > 0:
        out *= 1.0 - np.exp(-q2 / (2.0 * low * low))
    return out


def pad_to(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad the last two axes to ``shape``, content centred."""
    ny, nx = images.shape[-2:]
    py, px = shape
    out = np.zeros((*images.shape[:-2], py, px), images.dtype)
    y0, x0 = (py - ny) // 2, (px - nx) // 2
    out[..., y0 : y0 + ny, x0 : x0 + nx] = images
    return out


def fourier_shift(spectra: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Multiply spectra (n, ny, nx) by the phase ramps that move content by ``shifts``
    (n, 2) pixels (dy, dx)."""
    ny, nx = spectra.shape[-2:]
    qy = _freqs(ny) / ny
    qx = _freqs(nx) / nx
    ramp_y = np.exp(-2j * np.pi * shifts[:, 0, None] * qy[None, :])
    ramp_x = np.exp(-2j * np.pi * shifts[:, 1, None] * qx[None, :])
    return spectra * ramp_y[:, :, None] * ramp_x[:, None, :]


def _parabola(c_minus: np.ndarray, c0: np.ndarray, c_plus: np.ndarray) -> np.ndarray:
    """Vertex offset (in samples) of the parabola through three samples."""
    denom = c_minus - 2.0 * c0 + c_plus
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (c_minus - c_plus) / denom, 0.0)
    return np.clip(off, -0.5, 0.5)


def register(
    spectra: np.ndarray,
    reference: np.ndarray,
    *,
    upsample: int = 50,
    max_shift: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shifts of images against references, to about ``1 / upsample`` pixel or better.

    Parameters
    ----------
    spectra : ndarray, complex, shape (n, ny, nx)
        FFTs of the (mean-subtracted, apodized) images, already multiplied by any Fourier
        filter.
    reference : ndarray, complex, shape (ny, nx) or (n, ny, nx)
        FFT(s) of the reference(s).
    upsample : int
        Upsampling factor of the refinement (>= 1; 1 keeps the integer peak plus the
        parabola).
    max_shift : float, optional
        Search only integer peaks with ``|dy|, |dx| <= max_shift`` pixels.

    Returns
    -------
    shifts : ndarray, shape (n, 2)
        (dy, dx) in pixels: ``img(r) ~ ref(r - shift)``.
    peaks : ndarray, shape (n,)
        Normalised cross-correlation at the peak (about the correlation coefficient of
        the two filtered images).
    """
    n, ny, nx = spectra.shape
    product = spectra * np.conj(reference)
    cc = np.fft.ifft2(product).real
    if max_shift is not None:
        fy, fx = _freqs(ny), _freqs(nx)
        allowed = (np.abs(fy)[:, None] <= max_shift) & (np.abs(fx)[None, :] <= max_shift)
        cc = np.where(allowed, cc, -np.inf)
    flat = cc.reshape(n, -1).argmax(axis=1)
    iy, ix = np.unravel_index(flat, (ny, nx))
    peak0 = np.stack([_freqs(ny)[iy], _freqs(nx)[ix]], axis=1)
    # Upsampled DFT on a (m, m) grid spanning 1.5 pixels around the integer peak.
    up = max(1, int(upsample))
    m = int(np.ceil(1.5 * up)) | 1
    offsets = (np.arange(m) - m // 2) / up
    ry = peak0[:, 0, None] + offsets[None, :]  # (n, m)
    rx = peak0[:, 1, None] + offsets[None, :]
    ky = np.exp(2j * np.pi * ry[:, :, None] * _freqs(ny)[None, None, :] / ny)  # (n, m, ny)
    kx = np.exp(2j * np.pi * rx[:, :, None] * _freqs(nx)[None, None, :] / nx)  # (n, m, nx)
    fine = np.einsum("bmy,byx,bkx->bmk", ky, product, kx, optimize=True).real / (ny * nx)
    fflat = fine.reshape(n, -1).argmax(axis=1)
    jy, jx = np.unravel_index(fflat, (m, m))
    jy_c = np.clip(jy, 1, m - 2)
    jx_c = np.clip(jx, 1, m - 2)
    b = np.arange(n)
    dy = _parabola(fine[b, jy_c - 1, jx_c], fine[b, jy_c, jx_c], fine[b, jy_c + 1, jx_c])
    dx = _parabola(fine[b, jy_c, jx_c - 1], fine[b, jy_c, jx_c], fine[b, jy_c, jx_c + 1])
    shifts = np.stack([ry[b, jy_c] + dy / up, rx[b, jx_c] + dx / up], axis=1)
    # Normalised peak height (Parseval): sum(a b*) / sqrt(sum|a|^2 sum|b|^2).
    ref = np.broadcast_to(reference, spectra.shape)
    norm = np.sqrt(np.sum(np.abs(spectra) ** 2, axis=(1, 2)))
    norm = norm * np.sqrt(np.sum(np.abs(ref) ** 2, axis=(1, 2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        peaks = np.where(norm > 0, fine[b, jy, jx] * ny * nx / norm, 0.0)
    return shifts, peaks


def tcbf_power(fsub: np.ndarray, shifts: np.ndarray) -> float:
    """Power of the sum of the bins aligned by ``shifts`` (n, 2) pixels, over the spectra
    ``fsub`` (n, py, px) of every other frequency of the twice-padded bins."""
    qy = np.fft.fftfreq(2 * fsub.shape[1])[::2]
    qx = np.fft.fftfreq(2 * fsub.shape[2])[::2]
    ry = np.exp(2j * np.pi * shifts[:, :1] * qy)
    rx = np.exp(2j * np.pi * shifts[:, 1:] * qx)
    total = np.einsum("ky,kyx,kx->yx", ry, fsub, rx, optimize=True)
    return float(np.sum(total.real**2 + total.imag**2))


def coarse_search(fsub, shifts_of, params, c_max, dc):
    """Coordinate sweeps of (C1, A1 cos, A1 sin), twice (the second finer), each keeping
    the value that maximises the power of the aligned, filtered sum (the tcBF image).

    ``fsub`` are the filtered spectra of the unpadded (periodic) bins: every other
    frequency of the twice-padded ones, enough for a coarse search.
    """
    params = params.copy()
    sweep: dict[str, Any] = {}
    for rnd, (span, res) in enumerate(((None, dc), (3 * dc, dc / 2))):
        for k, name in enumerate(("c1", "a1_cos", "a1_sin")):
            half = span or (c_max if k == 0 else c_max / 2)
            trials = params[k] + np.linspace(-half, half, 2 * math.ceil(half / res) + 1)
            power = np.empty(trials.size)
            for i, value in enumerate(trials):
                p = params.copy()
                p[k] = value
                power[i] = tcbf_power(fsub, shifts_of(p))
            params[k] = trials[int(np.argmax(power))]
            sweep[f"{name}_{rnd}"] = (trials, power)
    return params, sweep


def register_round(spectra, filt, model, upsample, max_step):
    """Residual shifts of the bins aligned by ``model`` against their leave-one-out mean.

    All aligned bins get one window, inside where every shifted bin is flat: the bins' own
    (moving) apodization would pull the shifts towards zero.
    """
    shape = spectra.shape[1:]
    box = []
    for axis in (0, 1):
        n = shape[axis] // 2
        margin = min(0.05 * n + np.max(np.abs(model[:, axis])) + 1.0, n / 3)
        box.append((n // 2 + margin, n // 2 + n - margin))
    inner = apodize(shape, 0.1, (box[0], box[1]))
    aligned = np.fft.fft2(np.fft.ifft2(fourier_shift(spectra, -model)).real * inner) * filt
    return register(aligned, aligned.sum(axis=0)[None] - aligned, upsample=upsample,
                    max_shift=max_step)  # fmt: skip


def bright_field_disc(mean_pattern: np.ndarray) -> tuple[float, float, float]:
    """Centre (row, col) and radius (pixels) of the BF disc of a mean pattern: pixels
    above half the 99th percentile, their intensity-weighted centroid and
    ``sqrt(area / π)``."""
    m = np.asarray(mean_pattern, np.float64)
    top = np.percentile(m, 99.0)
    if not top > 0:
        raise ValueError("the mean pattern has no bright field (no pixel > 0)")
    rows, cols = np.nonzero(m > 0.5 * top)
    w = m[rows, cols]
    return float(rows @ w / w.sum()), float(cols @ w / w.sum()), math.sqrt(rows.size / math.pi)


@dataclass
class BrightFieldBins:
    """Virtual images of bins of BF pixels: ``images`` (n_bins, ny, nx) counts, ``theta``
    (n_bins, 2) the mean-pattern-weighted angle (θy, θx) of each bin in rad, ``n_pixels``
    BF pixels used, the disc ``centre`` (row, col) and ``radius`` in pixels."""

    images: np.ndarray
    theta: np.ndarray
    n_pixels: int
    centre: tuple[float, float]
    radius: float


def _blocks(data, rows: int):
    """Float64 blocks of scan rows of a (ny, nx, ky, kx) array or sliceable reader."""
    for start in range(0, data.shape[0], rows):
        yield start, np.asarray(data[start : start + rows], dtype=np.float64)


def bin_bright_field(
    data,
    angle_per_pixel: float,
    *,
    bf_radius: float | None = None,
    bf_center: tuple[float, float] | None = None,
    bin_size: int | None = None,
    edge: float = 0.7,
    rows: int | None = None,
) -> BrightFieldBins:
    """Group the BF pixels into square bins and form each bin's virtual image.

    Parameters
    ----------
    data : array-like (ny, nx, ky, kx)
        An ndarray or anything sliceable by scan rows (an h5py dataset).
    angle_per_pixel : float
        Detector angle per pixel, rad.
    bf_radius, bf_center : optional
        BF disc radius (pixels) and centre (row, col); from the mean pattern if missing.
    bin_size : int, optional
        Bin side in pixels; default: eight bins across the disc's diameter.
    edge : float
        Use pixels within ``edge × radius`` only: near the rim the BF images are not
        shifted copies of one another (one-sided aperture overlap).
    rows : int, optional
        Scan rows read at a time (default: about 64 MiB of float64).
    """
    if len(data.shape) != 4:
        raise ValueError(f"data has shape {data.shape}; allowed: 4-D (ny, nx, ky, kx)")
    if not 0 < edge <= 1:
        raise ValueError(f"edge {edge!r}; allowed: 0 < edge <= 1")
    ny, nx, ky, kx = data.shape
    rows = rows or max(1, (64 << 20) // (8 * nx * ky * kx))
    mean = None
    if bf_radius is None or bf_center is None:
        mean = sum(block.sum(axis=(0, 1)) for _, block in _blocks(data, rows)) / (ny * nx)
        cy, cx, radius = bright_field_disc(mean)
        cy, cx = bf_center if bf_center is not None else (cy, cx)
        radius = radius if bf_radius is None else float(bf_radius)
    else:
        (cy, cx), radius = (float(c) for c in bf_center), float(bf_radius)
    size = int(bin_size) if bin_size else max(1, round(radius / 4))
    r, c = np.mgrid[0:ky, 0:kx]
    inside = np.hypot(r - cy, c - cx) <= edge * radius
    label = np.floor((r - cy) / size) * 4096 + np.floor((c - cx) / size)
    ids, counts = np.unique(label[inside], return_counts=True)
    ids = ids[counts >= 0.5 * size * size]
    if ids.size < 4:
        raise ValueError(
            f"{ids.size} bins of {size} pixels fit in {edge} x the BF radius {radius:.1f} "
            "pixels; allowed: at least 4 (a smaller bin_size or a larger edge)"
        )
    member = inside[..., None] & (label[..., None] == ids)  # (ky, kx, nb)
    r0, r1 = np.nonzero(member.any(axis=(1, 2)))[0][[0, -1]] + [0, 1]
    c0, c1 = np.nonzero(member.any(axis=(0, 2)))[0][[0, -1]] + [0, 1]
    weights = member[r0:r1, c0:c1].reshape(-1, ids.size).astype(np.float64)
    images = np.empty((ny, nx, ids.size))
    pattern = np.zeros(weights.shape[0])
    for start, block in _blocks(data, rows):
        crop = block[:, :, r0:r1, c0:c1].reshape(block.shape[0] * nx, -1)
        images[start : start + block.shape[0]] = (crop @ weights).reshape(-1, nx, ids.size)
        pattern += crop.sum(axis=0)
    pattern = np.clip(pattern, 0.0, None) + 1e-12
    pr, pc = (g.ravel() for g in np.mgrid[r0:r1, c0:c1])
    theta = np.stack([(pattern * (pr - cy)) @ weights, (pattern * (pc - cx)) @ weights], 1)
    theta *= angle_per_pixel / (pattern @ weights)[:, None]
    return BrightFieldBins(np.moveaxis(images, -1, 0), theta, int(weights.sum()), (cy, cx),
                           radius)  # fmt: skip
