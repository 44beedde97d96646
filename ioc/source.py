"""Where frames come from: the :class:`FrameSource` protocol.

The instrument reads its groups back into a :class:`Readback` when an acquisition is
prepared and asks its source for a :class:`FrameRecipe`: how to render the frames, which
frames the detector will drop or deliver late, and what the file records about the
source. The acquisition engine renders from the recipe; no PV group knows the source.

:class:`bluestem.ioc.twin_source.TwinSource` (the physics twin) is the implementation
``bluestem ioc sim`` uses. Any other source (frames from a detector over TCP, frames
replayed from a file) implements :meth:`FrameSource.recipe` and is passed to
``Instrument(..., source=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "FrameBlock",
    "FrameRecipe",
    "FrameSource",
    "FrameStream",
    "Readback",
    "Render",
    "StreamRequest",
]

#: ``render(first, count) -> (count, ky, kx)`` frames of flat indices first .. first+count-1.
Render = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class FrameBlock:
    """Frames a :class:`FrameStream` delivered: flat indices ``first .. first + len - 1``.

    A source that skips a frame (a detector's frame numbers jump) ends the block before
    the gap and starts the next after it: the skipped index is never filled, so it stays
    missing in the file's ``received`` map and counts as dropped (never shifted).
    """

    first: int
    frames: np.ndarray  # (count, ky, kx)


@dataclass(frozen=True)
class StreamRequest:
    """What the instrument asks of a streaming source for one acquisition.

    Attributes
    ----------
    n_frames : int
        Frames (flat indices ``0 .. n_frames - 1``).
    period : float
        Seconds per frame (the dwell of a scan, the acquire period of a series).
    exposure : float
        Seconds the detector counts per frame.
    annotate : callable
        ``annotate(path, text)``: fill a text the recipe reserved in the file
        (:class:`bluestem.frames.layout.ReservedText` in :attr:`FrameRecipe.metadata`,
        ``path`` e.g. ``"/metadata/merlin/acquisition_header"``); a no-op without a file.
    """

    n_frames: int
    period: float
    exposure: float
    annotate: Callable[[str, str], None] = field(default=lambda path, text: None)


class FrameStream(Protocol):
    """Frames pushed at the source's own pace (a detector over TCP): the alternative to
    a :data:`Render` that :attr:`FrameRecipe.prepare` may return.

    The engine iterates :meth:`blocks` in its thread and submits each block as it comes;
    the acquisition ends when the iterator does (every frame read out) or raises (the
    error fails the acquisition; the blocks before it stay in the file). :meth:`stop`
    is called from any thread to end early; the iterator then ends after the frames the
    detector had already read out.
    """

    def blocks(self) -> Iterator[FrameBlock]:
        """The frames, block by block, in the order they arrive."""
        ...

    def stop(self) -> None:
        """End the acquisition early (thread-safe, idempotent)."""
        ...


@dataclass(frozen=True)
class Readback:
    """The instrument as read back when an acquisition is prepared (SI units).

    Build it with :meth:`of`, which turns every value into a plain Python number (the
    same values go into the file's metadata).

    Attributes
    ----------
    optics : dict
        ``high_tension`` (V), ``convergence_semi_angle`` (rad), ``defocus``,
        ``astigmatism`` (m), ``astigmatism_angle`` (rad), ``cs`` (m).
    detector : dict
        ``shape`` [ky, kx] native pixels read out, ``pixel_size`` (m), ``camera_length``
        (m), ``counter_depth`` (bits), ``binning``.
    scan : dict
        ``shape`` [ny, nx], ``step`` [dy, dx] (m), ``rotation`` (rad), ``flyback`` (s),
        ``offset`` [oy, ox] (m: ``SCAN:OffsetY/X``, the scan centre on the specimen).
    dose_per_frame : float
        Electrons per frame (0 with the beam blanked).
    beam_position : tuple of float or None
        (y, x) in m from the scan centre where every frame of an internally triggered
        series is taken; None when the frames follow the scan.
    stage : dict
        ``x``, ``y``, ``z`` (m): ``MIC:StageX/Y/Z`` (+x, +y move the specimen; +z is up,
        towards the lens).
    """

    optics: dict[str, float]
    detector: dict[str, Any]
    scan: dict[str, Any]
    dose_per_frame: float
    beam_position: tuple[float, float] | None = None
    stage: dict[str, float] = field(default_factory=lambda: dict.fromkeys("xyz", 0.0))

    @classmethod
    def of(
        cls,
        *,
        optics: Mapping[str, float],
        detector: Mapping[str, Any],
        scan: Mapping[str, Any],
        dose_per_frame: float,
        beam_position: tuple[float, float] | None = None,
        stage: Mapping[str, float] | None = None,
    ) -> Readback:
        """A readback of plain values (lists for shapes and steps, floats, ints); no
        ``scan["offset"]`` or ``stage`` is (0, 0) or at 0."""
        return cls(
            optics={k: float(v) for k, v in optics.items()},
            detector={
                "shape": [int(v) for v in detector["shape"]],
                "pixel_size": float(detector["pixel_size"]),
                "camera_length": float(detector["camera_length"]),
                "counter_depth": int(detector["counter_depth"]),
                "binning": int(detector["binning"]),
            },
            scan={
                "shape": [int(v) for v in scan["shape"]],
                "step": [float(v) for v in scan["step"]],
                "rotation": float(scan["rotation"]),
                "flyback": float(scan["flyback"]),
                "offset": [float(v) for v in scan.get("offset", (0.0, 0.0))],
            },
            dose_per_frame=float(dose_per_frame),
            beam_position=(
                None
                if beam_position is None
                else (float(beam_position[0]), float(beam_position[1]))
            ),
            stage={axis: float((stage or {}).get(axis, 0.0)) for axis in "xyz"},
        )


@dataclass(frozen=True)
class FrameRecipe:
    """How one acquisition's frames are made.

    Attributes
    ----------
    prepare : callable
        ``prepare() -> render`` (:data:`Render`) or a :class:`FrameStream`: called once,
        in the engine's thread (it may take seconds: building a model, connecting to a
        detector), never on the asyncio loop. ``render`` must be thread-safe for
        different ranges; the engine paces it. A stream paces itself: the engine only
        submits its blocks (``dropped``, ``late`` and the beam blank do not apply).
    dropped : frozenset of int
        Flat indices the detector never delivers.
    late : mapping of int to float
        Flat index to the extra delay (s) before the frame is delivered.
    parameters : mapping
        The source's own parameters for this acquisition (JSON-able).
    metadata : mapping of str to mapping
        Groups the source adds to the file's ``/metadata`` (the twin: ``simulation``).
    started : callable
        ``started(file)``: called by the instrument on the asyncio loop once the
        acquisition really starts (its file ``file`` is open, or frames start without a
        file: ``""``); it must be quick. Default: nothing.
    stream : callable, optional
        ``stream(request) -> FrameStream`` (:class:`StreamRequest`): a source that needs
        the acquisition's length and timing to start (a detector) gives this instead of
        :attr:`prepare`; the engine calls it in its thread, as it would ``prepare``.
    """

    prepare: Callable[[], Render | FrameStream]
    dropped: frozenset[int] = frozenset()
    late: Mapping[int, float] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    started: Callable[[str], None] = field(default=lambda file: None)
    stream: Callable[[StreamRequest], FrameStream] | None = None


class FrameSource(Protocol):
    """What produces the frames of an acquisition."""

    def recipe(self, readback: Readback, *, number: int) -> FrameRecipe:
        """The frames of acquisition ``number`` (0, 1, ... since the IOC started).

        Called on the asyncio loop when a file opens or frames start without one: it
        must return quickly (the slow part belongs in :attr:`FrameRecipe.prepare`).

        Parameters
        ----------
        readback : Readback
            The instrument as read back now.
        number : int
            How many acquisitions came before this one.
        """
        ...
