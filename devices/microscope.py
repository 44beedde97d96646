"""The microscope column and stage: every setting verified against its readback."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignalRO, Kind

from .liveness import Liveness
from .text import TextSignalRO
from .verified import VerifiedEnum, VerifiedSetting, readback_matches

__all__ = ["Microscope", "half_quantum"]


def half_quantum(quantum: float) -> float:
    """Absolute tolerance of a setting the hardware rounds to ``quantum``: half of it,
    plus 0.1 % for the float rounding of the readback."""
    return quantum * 0.501


def _setting(suffix: str, quantum: float, **kw) -> Cpt:
    return Cpt(VerifiedSetting, suffix, atol=half_quantum(quantum), **kw)


class Microscope(Device):
    """Electron-optical column and stage (``PFX:MIC:``).

    Each setting is a :class:`~bluestem.devices.verified.VerifiedSetting`; ``set()``
    fails unless the readback lands within half the hardware quantum of the request
    (docs/devices.md lists every tolerance). ``read()`` returns every readback, so the
    microscope can sit in a baseline stream; the setpoints are configuration.

    Units are the PVs' own: kV, nm, deg, mm, mrad, pA, um.
    """

    high_tension = _setting("HighTension", 0.1)  # kV
    defocus = _setting("Defocus", 0.1)  # nm
    astigmatism = _setting("Astigmatism", 0.1)  # nm
    astigmatism_angle = _setting("AstigmatismAngle", 0.1)  # deg
    cs = Cpt(EpicsSignalRO, "Cs_RBV", kind=Kind.normal)  # mm
    convergence_angle = _setting("ConvergenceAngle", 0.01)  # mrad
    camera_length = _setting("CameraLength", 1.0)  # mm
    beam_current = _setting("BeamCurrent", 0.01)  # pA
    beam_blank = Cpt(VerifiedEnum, "BeamBlank")
    stage_x = _setting("StageX", 0.001)  # um
    stage_y = _setting("StageY", 0.001)  # um
    stage_z = _setting("StageZ", 0.001)  # um
    stage_alpha = _setting("StageAlpha", 0.01)  # deg
    stage_beta = _setting("StageBeta", 0.01)  # deg
    message = Cpt(TextSignalRO, "StatusMessage_RBV", kind=Kind.omitted)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: The CA servers taken as not answering (shared by a session's devices).
        self.liveness = Liveness()

    #: The settings a plan may change (``series(..., setting=...)``).
    SETTINGS = (
        "high_tension",
        "defocus",
        "astigmatism",
        "astigmatism_angle",
        "convergence_angle",
        "camera_length",
        "beam_current",
        "beam_blank",
        "stage_x",
        "stage_y",
        "stage_z",
        "stage_alpha",
        "stage_beta",
    )

    def mismatched_settings(self) -> list[str]:
        """The settings whose readback is not within tolerance of its setpoint now (one
        text each, naming both): a scan resumed after a suspension re-verifies them."""
        out = []
        for name in self.SETTINGS:
            setting = getattr(self, name)
            want = setting.setpoint.get(use_monitor=False)
            got = setting.readback.get(use_monitor=False)
            if not readback_matches(setting._normalise(want), got, atol=setting.atol,
                                    rtol=setting.rtol):  # fmt: skip
                out.append(f"{setting.setting} = {want!r} but its readback is {got!r} "
                           f"(allowed {setting.tolerance_text()})")  # fmt: skip
        return out
