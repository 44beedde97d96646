"""Features in a survey image: bright blobs (nanoparticles in ADF, grains in a virtual
dark field) found, measured and ranked for the fine scans of an adaptive survey.

The method is the usual one of particle analysis in STEM: smooth the image with a
Gaussian of about a pixel (the counting noise), estimate the background and its noise
robustly (median and median absolute deviation), keep the pixels above a threshold,
label the connected regions, split a region holding several maxima between them (two
touching particles), and measure each region's intensity-weighted centroid above the
background. A region that touches the edge of the image is left out: part of it is
outside the field, so its centroid is biased towards the inside.

Positions are in pixels of the image, ``(y, x)``, row 0 first; :func:`pixel_to_scan`
turns them into the scan frame (nm from the scan centre, rotated as the scan is).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Feature", "find_features", "pixel_to_scan", "smooth"]

#: Robust sigma of a normal distribution per median absolute deviation.
MAD_SIGMA = 1.4826


@dataclass(frozen=True)
class Feature:
    """One blob of a survey image.

    Attributes
    ----------
    y, x : float
        Intensity-weighted centroid, pixels.
    mass : float
        Sum of (image − background) over the blob: the rank (heaviest first).
    area : int
        Pixels in the blob.
    peak : float
        Highest smoothed value above the background.
    radius : float
        ``sqrt(area / π)``, pixels.
    """

    y: float
    x: float
    mass: float
    area: int
    peak: float
    radius: float

    def to_dict(self) -> dict:
        """Plain values (for a measurement)."""
        return {k: (int(v) if k == "area" else float(v)) for k, v in asdict(self).items()}


def smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` convolved with a normalised Gaussian of ``sigma`` pixels (edges
    reflected, so the edge is not darkened); ``sigma <= 0`` returns a float copy."""
    out = np.asarray(image, dtype=np.float64).copy()
    if sigma <= 0:
        return out
    half = max(1, math.ceil(3 * sigma))
    t = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (half, half)
        padded = np.pad(out, pad, mode="reflect" if out.shape[axis] > half else "edge")
        out = np.apply_along_axis(np.convolve, axis, padded, kernel, mode="valid")
    return out


def _labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected labels of ``mask`` (0: background) and their count."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    ny, nx = mask.shape
    count = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        todo = deque([start])
        while todo:
            y, x = todo.popleft()
            for v, u in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= v < ny and 0 <= u < nx and mask[v, u] and not labels[v, u]:
                    labels[v, u] = count
                    todo.append((v, u))
    return labels, count


def _maxima(values: np.ndarray, region: np.ndarray) -> list[tuple[int, int]]:
    """Strict 8-neighbourhood maxima of ``values`` inside ``region`` (a plateau counts
    once: ties are broken by position)."""
    ny, nx = values.shape
    padded = np.pad(np.where(region, values, -np.inf), 1, constant_values=-np.inf)
    centre = padded[1:-1, 1:-1]
    best = np.ones(values.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            other = padded[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx]
            # earlier neighbours must be strictly lower, later ones lower or equal
            before = (dy, dx) < (0, 0)
            best &= (centre > other) if before else (centre >= other)
    return [tuple(p) for p in zip(*np.nonzero(best & region), strict=True)]


def find_features(
    image: np.ndarray,
    *,
    sigma: float = 1.0,
    threshold: float = 0.3,
    noise_sigmas: float = 5.0,
    min_area: int = 4,
    edge: int = 1,
    split: bool = True,
    background: float | None = None,
) -> list[Feature]:
    """Bright blobs of ``image``, heaviest first.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        A survey image (e.g. ADF); NaN (positions not received) counts as background.
    sigma : float
        Gaussian smoothing, pixels (0..10).
    threshold : float
        A blob pixel is above ``background + threshold × (highest − background)`` of
        the smoothed image (0 < threshold < 1) ...
    noise_sigmas : float
        ... and above ``background + noise_sigmas × noise`` (robust noise of the
        unsmoothed image; >= 0).
    min_area : int
        Smallest blob kept, pixels (>= 1).
    edge : int
        Blobs with a pixel within ``edge`` pixels of the image's border are left out
        (>= 0; 0 keeps every blob).
    split : bool
        Split a blob holding several maxima of the smoothed image between them (two
        touching particles); False keeps it whole (an image resolving a particle's atomic
        columns, which are maxima too).
    background : float, optional
        The background level (default: the image's median). A field mostly filled by
        one feature (a fine scan centred on a particle) has its median inside the
        feature: give a level measured where the feature is not (e.g. a low percentile).

    Returns
    -------
    list of Feature

    Raises
    ------
    ValueError
        A bad argument, naming it and the allowed range.
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2 or min(data.shape) < 3:
        raise ValueError(f"image has shape {data.shape}; allowed a 2-D image, each side >= 3")
    for name, value, low, high in (("sigma", sigma, 0.0, 10.0), ("threshold", threshold, 0.0,
                                   1.0), ("noise_sigmas", noise_sigmas, 0.0, 1e3)):  # fmt: skip
        if not (isinstance(value, int | float) and low <= value <= high) or (
            name == "threshold" and value in (0.0, 1.0)
        ):
            raise ValueError(f"{name}={value!r}: allowed {low:g}..{high:g}"
                             + (" (exclusive)" if name == "threshold" else ""))  # fmt: skip
    if not isinstance(split, bool):
        raise ValueError(f"split={split!r}: allowed True or False")
    for name, value in (("min_area", min_area), ("edge", edge)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (name == "min_area"):
            raise ValueError(f"{name}={value!r}: allowed an integer >= {int(name == 'min_area')}")
    finite = np.isfinite(data)
    if not finite.any():
        return []
    if background is not None and not (isinstance(background, int | float)
                                       and math.isfinite(background)):  # fmt: skip
        raise ValueError(f"background={background!r}: allowed a finite number or None")
    median = float(np.median(data[finite]))
    background = median if background is None else float(background)
    data = np.where(finite, data, median)
    values = data[finite]
    if background != median:
        # The noise of the background, from the pixels nearer it than the median (the
        # median may lie inside a feature that fills the field).
        quiet = values[values <= (background + median) / 2]
        values = quiet if quiet.size >= 8 else values
    noise = MAD_SIGMA * float(np.median(np.abs(values - background)))
    smoothed = smooth(data, float(sigma))
    top = float(smoothed.max())
    level = max(background + threshold * (top - background), background + noise_sigmas * noise)
    mask = smoothed > level
    if not mask.any():
        return []
    labels, count = _labels(mask)
    ny, nx = data.shape
    yy, xx = np.indices(data.shape)
    features = []
    for label in range(1, count + 1):
        region = labels == label
        peaks = _maxima(smoothed, region) if split else []
        # Two touching blobs: each pixel of the region goes to its nearest maximum.
        if split and len(peaks) > 1:
            py, px = (np.array(c, dtype=np.float64) for c in zip(*peaks, strict=True))
            ry, rx = np.nonzero(region)
            owner = np.argmin((ry[:, None] - py) ** 2 + (rx[:, None] - px) ** 2, axis=1)
            parts = []
            for k in range(len(peaks)):
                part = np.zeros_like(region)
                part[ry[owner == k], rx[owner == k]] = True
                parts.append(part)
        else:
            parts = [region]
        for part in parts:
            area = int(part.sum())
            if area < min_area:
                continue
            rows, cols = yy[part], xx[part]
            inside = (rows.min() >= edge and cols.min() >= edge
                      and rows.max() < ny - edge and cols.max() < nx - edge)  # fmt: skip
            if edge and not inside:
                continue
            weight = np.clip(data[part] - background, 0.0, None)
            mass = float(weight.sum())
            if mass <= 0:
                continue
            features.append(Feature(
                y=float((weight * yy[part]).sum() / mass),
                x=float((weight * xx[part]).sum() / mass),
                mass=mass, area=area, peak=float(smoothed[part].max() - background),
                radius=math.sqrt(area / math.pi),
            ))  # fmt: skip
    features.sort(key=lambda f: -f.mass)
    return features


def pixel_to_scan(
    y: float, x: float, shape: tuple[int, int], step: tuple[float, float], rotation: float
) -> tuple[float, float]:
    """A position in a scan image (pixels) as a displacement from the scan centre in the
    specimen frame, in the unit of ``step``: the scan's grid ``(i − (n − 1) / 2) × step``
    rotated by ``rotation`` (rad), as the scan generator places its positions."""
    yy = (float(y) - (shape[0] - 1) / 2.0) * step[0]
    xx = (float(x) - (shape[1] - 1) / 2.0) * step[1]
    c, s = math.cos(rotation), math.sin(rotation)
    return s * xx + c * yy, c * xx - s * yy
