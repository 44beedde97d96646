"""What the Merlin simulator's frames show: the physics twin, or frames from a 4D file.

A provider gives assembled frames ``(count, ky, kx)`` for frame indices ``first ..``
(0-based, the detector's frame number minus one) at the detector's shape. The simulator
has no scan generator: frame *i* shows scan position ``i mod positions`` of the
provider's own raster, so an acquisition longer than the raster goes round it again.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ..file_frames import FileFrames, fit_frames

__all__ = ["FileFrames", "TwinFrames", "fit_frames", "provider_for"]


class TwinFrames:
    """Frames of the physics twin scanning a raster of ``scan`` positions.

    The raster's noisy frames are rendered once, when first asked for (the twin's frame
    cache makes the noiseless part fast), and then served from memory: a detector sends
    at its own rate, and rendering 256² frames as they go would not keep up.

    Parameters
    ----------
    shape : (ky, kx)
        The detector's assembled frame (256² or 512²).
    specimen : str
        A name of :data:`bluestem.twin.SPECIMENS`.
    scan : (ny, nx)
        Positions of the raster, at ``step`` (m).
    dose : float
        Electrons per frame.
    seed : int
        Noise seed.
    """

    def __init__(self, shape, *, specimen="srtio3", scan=(16, 16), step=0.2e-10,
                 dose=2000.0, seed=0, camera_length=0.1):  # fmt: skip
        self.shape = tuple(shape)
        self.specimen, self.scan, self.step = specimen, tuple(scan), float(step)
        self.dose, self.seed, self.camera_length = float(dose), int(seed), camera_length
        self._frames: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def positions(self) -> int:
        return int(math.prod(self.scan))

    def _rendered(self) -> np.ndarray:
        with self._lock:
            if self._frames is None:
                from bluestem import twin as tw

                twin = tw.Twin(
                    tw.Optics(),
                    tw.DetectorModel(
                        shape=self.shape, camera_length=self.camera_length, counter_depth=24
                    ),
                    tw.ScanGeometry(shape=self.scan, step=(self.step, self.step)),
                    tw.make_specimen(self.specimen),
                    dose_per_frame=self.dose,
                    seed=self.seed,
                )
                self._frames = fit_frames(twin.render(0, self.positions), self.shape)
            return self._frames

    def frames(self, first: int, count: int, depth: int = 24) -> np.ndarray:
        """Frames ``first .. first + count - 1`` (uint32, going round the raster), clipped
        to a counter of ``depth`` bits."""
        cached = self._rendered()
        index = np.arange(first, first + count) % len(cached)
        return np.minimum(cached[index], np.uint32(2**depth - 1))


def provider_for(source: str, shape, **twin_options):
    """``"twin"`` → :class:`TwinFrames`, anything else is a file → :class:`FileFrames`."""
    if source == "twin":
        return TwinFrames(shape, **twin_options)
    return FileFrames(source, shape)
