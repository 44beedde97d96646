"""The microscope column and stage: ``PFX:MIC:``."""

from __future__ import annotations

import math

from bluestem.instrument import BeamBlank, names

from .settings import SettingsGroup, long_string, readback, setting
from .validation import Limits

__all__ = ["Microscope"]

STAGE_TILT = Limits(-80.0, 80.0)


class Microscope(SettingsGroup):
    """Column and stage of the simulated microscope (prefix ``MIC:``).

    PVs (each setting with a read-only ``_RBV`` of the value really applied):
    HighTension (kV), Defocus (nm, C1), Astigmatism (nm, |A1|), AstigmatismAngle (deg),
    ConvergenceAngle (mrad), CameraLength (mm), BeamCurrent (pA), BeamBlank (Off/On),
    StageX, StageY, StageZ (µm), StageAlpha, StageBeta (deg); read-only Cs_RBV (mm) and
    StatusMessage_RBV.  Settings named in :attr:`stuck` (a simulated hardware fault, given
    by the instrument) accept the setpoint but their readback does not follow.

    The stage moves the specimen: a positive StageX (StageY) moves it +x (+y) under the
    beam, so a feature at specimen x appears at scan position x + StageX; StageZ is its
    height (+z up, towards the lens), which the probe sees as defocus (C1 lowered by
    StageZ: a higher specimen is underfocus; see docs/twin.md).
    """

    message_attr = "message"
    #: names of the settings whose readback does not follow (``--stuck``)
    stuck: frozenset[str] = frozenset()

    high_tension, high_tension_rbv = setting(
        "HighTension", 200.0, "Accelerating voltage.", units="kV",
        limits=Limits(20.0, 300.0), quantum=0.1,
    )  # fmt: skip
    defocus, defocus_rbv = setting(
        "Defocus", 0.0, "Defocus C1 (positive = overfocus, see docs/twin.md).", units="nm",
        limits=Limits(-1e5, 1e5), quantum=0.1,
    )  # fmt: skip
    astigmatism, astigmatism_rbv = setting(
        "Astigmatism", 0.0, "Two-fold astigmatism magnitude |A1|.", units="nm",
        limits=Limits(0.0, 1e4), quantum=0.1,
    )  # fmt: skip
    astigmatism_angle, astigmatism_angle_rbv = setting(
        "AstigmatismAngle", 0.0, "Two-fold astigmatism azimuth.", units="deg",
        limits=Limits(-180.0, 180.0), quantum=0.1,
    )  # fmt: skip
    cs_rbv = readback("Cs_RBV", 1.2, "Spherical aberration C3 of the objective.", units="mm")
    convergence_angle, convergence_angle_rbv = setting(
        "ConvergenceAngle", 20.0, "Probe convergence semi-angle.", units="mrad",
        limits=Limits(0.1, 50.0), quantum=0.01,
    )  # fmt: skip
    camera_length, camera_length_rbv = setting(
        "CameraLength", 100.0, "Camera length to the pixelated detector.", units="mm",
        limits=Limits(10.0, 5000.0), quantum=1.0,
    )  # fmt: skip
    beam_current, beam_current_rbv = setting(
        "BeamCurrent", 10.0, "Probe current.", units="pA",
        limits=Limits(0.0, 10000.0), quantum=0.01,
    )  # fmt: skip
    beam_blank, beam_blank_rbv = setting(
        "BeamBlank", BeamBlank.OFF, "Beam blanker (always accepted: blanking is a safety action).",
        enum_strings=names(BeamBlank), live=True,
    )  # fmt: skip

    @beam_blank.applies
    async def beam_blank(self, setting, value) -> None:
        await self.read_back(setting, value)
        self.control.beam_blanked(value == BeamBlank.ON)

    stage_x, stage_x_rbv = setting(
        "StageX",
        0.0,
        "Stage x (positive moves the specimen +x under the beam).",
        units="um",
        limits=Limits(-1000.0, 1000.0),
        quantum=0.001,
    )
    stage_y, stage_y_rbv = setting(
        "StageY",
        0.0,
        "Stage y (positive moves the specimen +y under the beam).",
        units="um",
        limits=Limits(-1000.0, 1000.0),
        quantum=0.001,
    )
    stage_z, stage_z_rbv = setting(
        "StageZ", 0.0, "Stage z: specimen height, up towards the lens (lowers C1).",
        units="um", limits=Limits(-500.0, 500.0), quantum=0.001,
    )  # fmt: skip
    stage_alpha, stage_alpha_rbv = setting(
        "StageAlpha", 0.0, "Stage alpha tilt.", units="deg", limits=STAGE_TILT, quantum=0.01
    )
    stage_beta, stage_beta_rbv = setting(
        "StageBeta", 0.0, "Stage beta tilt.", units="deg", limits=STAGE_TILT, quantum=0.01
    )
    message = long_string(
        "StatusMessage_RBV", "", "Last refused microscope write and why.", read_only=True
    )

    async def settle(self, spec, value) -> None:
        """Apply an accepted value, unless the setting is stuck (the simulated fault: the
        hardware ignores the setpoint)."""
        if spec.name in self.stuck:
            return
        await super().settle(spec, value)

    @property
    def blanked(self) -> bool:
        """True while the beam is blanked (``BeamBlank_RBV=On``)."""
        return self.beam_blank_rbv.value == BeamBlank.ON

    def camera_length_m(self) -> float:
        """The camera length read back, in m."""
        return self.camera_length_rbv.value * 1e-3

    def optics_state(self) -> dict:
        """The column as read back, in SI units (the twin's ``Optics`` fields)."""
        return {
            "high_tension": self.high_tension_rbv.value * 1e3,
            "convergence_semi_angle": self.convergence_angle_rbv.value * 1e-3,
            "defocus": self.defocus_rbv.value * 1e-9,
            "astigmatism": self.astigmatism_rbv.value * 1e-9,
            "astigmatism_angle": math.radians(self.astigmatism_angle_rbv.value),
            "cs": self.cs_rbv.value * 1e-3,
        }

    def stage_position(self) -> dict:
        """The stage x, y, z as read back, in m."""
        return {
            "x": self.stage_x_rbv.value * 1e-6,
            "y": self.stage_y_rbv.value * 1e-6,
            "z": self.stage_z_rbv.value * 1e-6,
        }

    def state(self) -> dict:
        """Every readback, in the PVs' units, for the file's metadata."""
        names = [
            "HighTension", "Defocus", "Astigmatism", "AstigmatismAngle", "ConvergenceAngle",
            "CameraLength", "BeamCurrent", "BeamBlank", "StageX", "StageY", "StageZ",
            "StageAlpha", "StageBeta", "Cs",
        ]  # fmt: skip
        state = {}
        for name in names:
            pv = self.rbv(name)
            state[name] = pv.value
            units = getattr(pv, "units", "")
            if units:
                state[f"{name}_units"] = units
        return state

    def dose_per_frame(self, dwell: float) -> float:
        """Electrons per frame: current × dwell / e, 0 when blanked."""
        if self.blanked:
            return 0.0
        return self.beam_current_rbv.value * 1e-12 * dwell / 1.602176634e-19
