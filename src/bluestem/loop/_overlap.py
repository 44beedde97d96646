"""Private helpers of :mod:`bluestem.loop.overlap`: the BF pixel stack, the lattice peaks,
the phase model of the double-disc overlaps, the slope search and the Gauss–Newton fit.

Conventions: detector pixel offsets ``(px, py)`` (columns, rows) from the BF centre, angles
``θ = δθ (px, py)`` in (x, y) order; scan frequencies ``(qy, qx)`` in 1/m; parameters
``p = (C1, A1 cos 2φ, A1 sin 2φ, C3)`` in m with ``χ(θ) = (π/λ) p · basis(θ)``.
"""

from __future__ import annotations

import math

import numpy as np

from bluestem.loop._xcorr import bright_field_disc

__all__ = [
    "coarse_matrix",
    "gauss_newton",
    "lens_items",
    "lens_model",
    "phase_bases",
    "read_bright_field",
    "refine_peak",
    "search_peaks",
]


def _basis(tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """``χ = (π/λ) p · basis``: (|θ|², θx² − θy², 2 θx θy, |θ|⁴ / 2), shape (4, ...)."""
    t2 = tx * tx + ty * ty
    return np.stack([t2, tx * tx - ty * ty, 2 * tx * ty, 0.5 * t2 * t2])


def phase_bases(tx, ty, q_xy, wavelength) -> tuple[np.ndarray, np.ndarray]:
    """d(phase)/dp of the lenses ``χ(θ) − χ(θ − λQ)`` and ``χ(θ + λQ) − χ(θ)``, (4, ...)
    each, for the reflection ``Q = q_xy`` (x, y) in 1/m; ``θ = (tx, ty)`` in rad."""
    lx, ly = wavelength * q_xy[0], wavelength * q_xy[1]
    here = _basis(tx, ty)
    scale = math.pi / wavelength
    return scale * (here - _basis(tx - lx, ty - ly)), scale * (_basis(tx + lx, ty + ly) - here)


def read_bright_field(data, bf_center, bf_radius, margin):
    """The counts of the BF pixels at least ``margin`` inside the disc, (positions, pixels)
    float64, the disc centre (row, col), its radius and the pixels' (rows, cols)."""
    if len(data.shape) != 4:
        raise ValueError(f"data has shape {data.shape}; allowed: 4-D (ny, nx, ky, kx)")
    ny, nx, ky, kx = data.shape
    rows = max(1, (64 << 20) // (8 * nx * ky * kx))

    def blocks():
        for i in range(0, ny, rows):
            yield np.asarray(data[i : i + rows], np.float64)

    if bf_center is None or bf_radius is None:
        cy, cx, radius = bright_field_disc(sum(b.sum(axis=(0, 1)) for b in blocks()) / (ny * nx))
        cy, cx = (float(c) for c in bf_center) if bf_center is not None else (cy, cx)
        radius = float(bf_radius) if bf_radius is not None else radius
    else:
        (cy, cx), radius = (float(c) for c in bf_center), float(bf_radius)
    r, c = np.mgrid[0:ky, 0:kx]
    inside = np.hypot(r - cy, c - cx) <= radius - margin
    n = int(inside.sum())
    if n < 16:
        raise ValueError(f"the BF disc (radius {radius:.1f} pixels) less the margin {margin} "
                         f"holds {n} pixels; allowed: at least 16")  # fmt: skip
    stack = np.concatenate([b[:, :, inside].reshape(-1, n) for b in blocks()])
    return stack, (float(cy), float(cx)), float(radius), (r[inside], c[inside])


def search_peaks(spectrum, floor, freqs, keep, n_max, min_snr):
    """Scan frequencies (qy, qx) of the local maxima of the noise-debiased power
    ``spectrum − floor[0]`` above ``min_snr × floor[1]`` in ``keep``, one per Friedel
    pair (the half-plane), strongest first, at most ``n_max``."""
    power, (fy, fx) = spectrum - floor[0], freqs
    peak = np.ones(power.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                peak &= power > np.roll(power, (dy, dx), axis=(0, 1))
    half = (fy[:, None] > 0) | ((fy[:, None] == 0) & (fx[None, :] > 0))
    iy, ix = np.nonzero(peak & half & keep & (power > min_snr * floor[1]))
    order = np.argsort(power[iy, ix])[::-1][:n_max]
    return [(float(fy[iy[i]]), float(fx[ix[i]])) for i in order]


def _vertex(line) -> float:
    """Vertex offset (samples, clipped to ±1) of the parabola through three samples."""
    den = line[0] - 2.0 * line[1] + line[2]
    return float(np.clip(0.5 * (line[0] - line[2]) / den, -1.0, 1.0)) if den < 0 else 0.0


def refine_peak(q, phases, centred, h):
    """Move a scan frequency (qy, qx) to the maximum of ``Σ_k |G(k, q)|²`` (direct DFTs)
    by 3 × 3 parabolas of steps ``h``, ``h/3``, ``h/9`` (per axis, 1/m): the lattice
    peak off the FFT grid, so the field need not hold whole cells."""
    q = np.array(q, np.float64)
    offsets = np.array([[a, b] for a in (-1, 0, 1) for b in (-1, 0, 1)], np.float64)
    for step in (h, h / 3, h / 9):
        val = np.sum(np.abs(phases(q + offsets * step) @ centred) ** 2, axis=1).reshape(3, 3)
        q += step * np.array([_vertex(val[:, 1]), _vertex(val[1, :])])
    return q


def lens_items(gq, refl, var, pix, centre, radius, app, lam, margin):
    """Per reflection: the pixels of its two lenses clear of every disc edge by
    ``margin``, their overlaps ``g``, weights ``w`` (1 / Poisson variance), lens supports
    ``sup`` and phase bases."""
    rows, cols = pix
    px, py = cols - centre[1], rows - centre[0]
    items = []
    for g, (qy, qx) in zip(gq, refl, strict=True):
        ox, oy = lam * qx / app, lam * qy / app  # centre of the disc D(Q), pixels
        dist = [np.hypot(px - ox, py - oy), np.hypot(px + ox, py + oy)]
        inside = [d <= radius - margin for d in dist]
        clear = [i | (d >= radius + margin) for i, d in zip(inside, dist, strict=True)]
        used = (inside[0] | inside[1]) & clear[0] & clear[1]
        items.append({
            "g": g[used], "w": 1.0 / var[used], "sup": [i[used] for i in inside],
            "bases": phase_bases(px[used] * app, py[used] * app, (qx, qy), lam),
            "pix": (rows[used], cols[used]),
        })  # fmt: skip
    return items


def _slope(item, c3, shape):
    """Phase slope (cycles per pixel, (fx, fy)) of one reflection's lenses: the peak of the
    2D FFT over the detector of each lens alone, C3's known phase removed."""
    pad = 4 * max(shape)
    power = 0.0
    rows, cols = item["pix"]
    for k in (0, 1):
        only = item["sup"][k] & ~item["sup"][1 - k]  # one beam pair: one constant phase
        img = np.zeros(shape, complex)
        img[rows[only], cols[only]] = item["g"][only] * np.exp(
            -1j * c3 * item["bases"][k][3][only]
        )
        power = power + np.abs(np.fft.fft2(img, s=(pad, pad))) ** 2
    iy, ix = np.unravel_index(int(np.argmax(power)), power.shape)
    fy = iy + _vertex([power[(iy + d) % pad, ix] for d in (-1, 0, 1)])
    fx = ix + _vertex([power[iy, (ix + d) % pad] for d in (-1, 0, 1)])
    return np.array([(fx + pad / 2) % pad - pad / 2, (fy + pad / 2) % pad - pad / 2]) / pad


def _solve_m(refl, slopes, weights, app):
    """(C1, a, b) from ``M Q = slope / δθ`` of each reflection, weighted least squares."""
    a, rhs = [], []
    for (qy, qx), f, w in zip(refl, slopes, weights, strict=True):
        a += [[w * qx, w * qx, w * qy], [w * qy, -w * qy, w * qx]]
        rhs += [w * f[0] / app, w * f[1] / app]
    return np.linalg.lstsq(np.array(a), np.array(rhs), rcond=None)[0]


def coarse_matrix(items, refl, snr, app, c3, shape):
    """Coarse (C1, a, b) from the lenses' phase slopes, and the slopes (cycles/pixel).

    The shortest two non-parallel reflections (the slowest phase ramps, the last to alias
    on the detector) give M; the others' slopes are then unwrapped (by whole cycles per
    pixel) to the prediction before all are combined.
    """
    slopes = np.array([_slope(item, c3, shape) for item in items])
    weights = np.sqrt(np.maximum(snr, 0.0))
    order = np.argsort(np.hypot(refl[:, 0], refl[:, 1]))
    u = refl / np.linalg.norm(refl, axis=1, keepdims=True)
    first = order[0]
    second = next(j for j in order[1:] if abs(u[first, 0] * u[j, 1] - u[first, 1] * u[j, 0]) > 0.3)
    base = [first, second]
    p = _solve_m(refl[base], slopes[base], weights[base], app)
    m = np.array([[p[0] + p[1], p[2]], [p[2], p[0] - p[1]]])
    predicted = (refl[:, ::-1] @ m.T) * app
    unwrapped = slopes + np.round(predicted - slopes)
    return _solve_m(refl, unwrapped, weights, app), unwrapped, float(np.abs(slopes[base]).max())


def lens_model(item, full, n_par):
    """At parameters ``full`` (4): the projected Jacobian (n_par, n), the residual, the
    model and the two lens constants (weighted linear least squares)."""
    w, g, bases = item["w"], item["g"], item["bases"]
    u = [
        s * np.exp(1j * np.tensordot(full, b, 1)) for s, b in zip(item["sup"], bases, strict=True)
    ]
    a = np.array([[np.sum(w * np.conj(x) * y) for y in u] for x in u])
    const = np.linalg.pinv(a) @ np.array([np.sum(w * np.conj(x) * g) for x in u])
    model = const[0] * u[0] + const[1] * u[1]
    jac = 1j * (const[0] * u[0] * bases[0][:n_par] + const[1] * u[1] * bases[1][:n_par])
    # Variable projection (Kaufman): only the part of the Jacobian the lens constants
    # cannot absorb informs the parameters; without it the slope and the constant phase
    # of a lens off the origin trade off, and the sigmas come out too small.
    cross = np.array([[np.sum(w * np.conj(x) * j) for j in jac] for x in u])
    jac = jac - (np.linalg.pinv(a) @ cross).T @ np.stack(u)
    return jac, g - model, model, const


def gauss_newton(items, p, c3, max_iterations, tolerance):
    """Weighted complex least squares of all reflections' overlaps over ``p`` (C1, a, b[,
    C3]; C3 fixed at ``c3`` when ``p`` has three). Returns p, the Gauss–Newton matrix
    ``Re JᴴWJ``, whether it converged, and the steps taken."""
    n_par = p.size
    converged, it, hess = False, 0, np.eye(n_par)
    for it in range(1, max_iterations + 1):  # noqa: B007
        hess, grad = np.zeros((n_par, n_par)), np.zeros(n_par)
        full = np.append(p[:3], p[3] if n_par == 4 else c3)
        for item in items:
            jac, res, _, _ = lens_model(item, full, n_par)
            wj = jac * item["w"]
            hess += np.real(wj @ jac.conj().T)
            grad += np.real(wj @ res.conj())
        scale = 1.0 / np.sqrt(np.maximum(np.diag(hess), 1e-300))  # conditioning: m vs C3
        step = scale * np.linalg.solve(hess * np.outer(scale, scale), grad * scale)
        p = p + step
        small_c3 = n_par == 3 or abs(step[3]) <= 1e-4 * abs(p[3]) + 1e-9
        if np.all(np.abs(step[:3]) < tolerance) and small_c3:
            converged = True
            break
    return p, hess, converged, it
