"""autofocus: its arguments are refused before any message, the A1 correction is the
complex two-fold arithmetic, and the agent corrects by minus the fit."""

from __future__ import annotations

import cmath
import math

import pytest

from bluestem.plans.autofocus import (
    ParallaxFocusAgent,
    a1_correction,
    autofocus,
    electron_wavelength,
)


class _Device:
    """Just the attributes autofocus checks (it sends no message while validating)."""

    def __init__(self, *attrs):
        for a in attrs:
            setattr(self, a, object())


DET = _Device("hdf", "cam")
SCAN = _Device("geometry")
MIC = _Device("defocus", "astigmatism", "astigmatism_angle")


def _start(**kw):
    return next(autofocus(DET, SCAN, MIC, **kw))


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"shape": (8, 48)}, ["shape=(8, 48)", "16..512"]),
        ({"shape": (48,)}, ["shape=(48,)"]),
        ({"fov": 0.1}, ["fov=0.1", "[0.5, 10000]"]),
        ({"fov": "wide"}, ["fov='wide'"]),
        ({"dwell": 0.0}, ["dwell=0.0", "(0, 1]"]),
        ({"c1_offset": 10e-9}, ["c1_offset=1e-08", "5e-08 <= |c1_offset| <= 2e-06"]),
        ({"c1_offset": -3e-6}, ["c1_offset=-3e-06", "[-2e-06, 2e-06]"]),
        ({"c1_offset": -300}, ["c1_offset=-300"]),
        ({"max_iterations": 6}, ["max_iterations=6", "1..5"]),
        ({"max_iterations": 0}, ["max_iterations=0", "1..5"]),
        ({"max_iterations": 2.0}, ["max_iterations=2.0", "1..5"]),
        ({"max_iterations": True}, ["max_iterations=True"]),
        ({"tolerance": 2.0}, ["tolerance=2.0", "[1e-10, 1e-07]"]),
        ({"tolerance": float("nan")}, ["tolerance=nan"]),
        ({"md": ["x"]}, ["md=['x']", "a mapping or None"]),
    ],
)
def test_bad_arguments_are_refused_before_any_message(kw, words):
    with pytest.raises(ValueError) as info:
        _start(**kw)
    for word in words:
        assert word in str(info.value)


def test_devices_without_the_settings_are_refused():
    with pytest.raises(ValueError, match=r"mic=.*missing \['astigmatism', 'astigmatism_angle'\]"):
        next(autofocus(DET, SCAN, _Device("defocus")))
    with pytest.raises(ValueError, match=r"det=None"):
        next(autofocus(None, SCAN, MIC))


def _textbook(a_set, phi_set_deg, a_fit, phi_fit):
    """a_new, phi_new with a_new e^{2i phi_new} = a_set e^{2i phi_set} - a_fit e^{2i phi_fit},
    written out in components (x = a cos 2φ, y = a sin 2φ)."""
    x = a_set * math.cos(2 * math.radians(phi_set_deg)) - a_fit * math.cos(2 * phi_fit)
    y = a_set * math.sin(2 * math.radians(phi_set_deg)) - a_fit * math.sin(2 * phi_fit)
    return math.hypot(x, y), math.degrees(math.atan2(y, x) / 2)


@pytest.mark.parametrize(
    ("a_set", "phi_set", "a_fit", "phi_fit"),
    [(0.0, 0.0, 30.0, math.radians(40)), (30.0, 40.0, 30.0, math.radians(40)),
     (10.0, -60.0, 4.0, math.radians(25)), (12.5, 170.0, 3.0, -1.2),
     (5.0, 89.9, 5.0, math.radians(-89.9)), (20.0, 0.0, 0.0, 0.3)],
)  # fmt: skip
def test_a1_correction_is_the_complex_difference(a_set, phi_set, a_fit, phi_fit):
    magnitude, angle = a1_correction(a_set, phi_set, a_fit, phi_fit)
    expect_mag, expect_angle = _textbook(a_set, phi_set, a_fit, phi_fit)
    assert magnitude == pytest.approx(expect_mag, abs=1e-9)
    assert -90.0 <= angle < 90.0
    if magnitude > 1e-9:  # the angle is two-fold: equal modulo 180 deg
        assert cmath.exp(2j * math.radians(angle)) == pytest.approx(
            cmath.exp(2j * math.radians(expect_angle)), abs=1e-9
        )
    # applying the correction and adding the fitted (effective) A1 back gives the setpoint
    total = magnitude * cmath.exp(2j * math.radians(angle)) + a_fit * cmath.exp(2j * phi_fit)
    assert total == pytest.approx(a_set * cmath.exp(2j * math.radians(phi_set)), abs=1e-9)


def test_a1_correction_of_an_exact_fit_is_zero():
    zero = a1_correction(30.0, 40.0, 30.0, math.radians(40.0))
    assert zero == pytest.approx((0.0, 0.0), abs=1e-9)
    assert a1_correction(30.0, 40.0, 30.0, math.radians(40.0 - 180.0))[0] == pytest.approx(
        0.0, abs=1e-9
    )  # modulo 180 deg


def test_electron_wavelength_is_the_textbook_value():
    assert electron_wavelength(200e3) == pytest.approx(2.5079e-12, rel=1e-4)
    assert electron_wavelength(300e3) == pytest.approx(1.9687e-12, rel=1e-4)


def _measurement(c1, a1, angle, sigma=0.5e-9, reliable=True):
    return {"values": {"c1": c1, "a1": a1, "a1_angle": angle},
            "uncertainties": {"c1": sigma, "a1": sigma, "a1_angle": 0.1},
            "reliable": reliable}  # fmt: skip


def test_the_agent_measures_then_corrects_by_minus_the_fit():
    agent = ParallaxFocusAgent(tolerance=2e-9)
    assert agent.suggest(1) == [{}]
    assert agent.report()["within_tolerance"] is False
    point = {"mic_defocus": 10.0, "mic_astigmatism": 0.0, "mic_astigmatism_angle": 0.0}
    agent.ingest(point, _measurement(120e-9, 30e-9, math.radians(40)))
    report = agent.report()
    assert report["within_tolerance"] is False and report["decision"] == "correct C1 and A1"
    assert report["c1_nm"] == pytest.approx(120.0)
    (step,) = agent.suggest(1)
    assert step["mic_defocus"] == pytest.approx(-110.0)
    assert step["mic_astigmatism"] == pytest.approx(30.0)
    assert step["mic_astigmatism_angle"] == pytest.approx(-50.0)  # 40 - 90 (two-fold)
    assert agent.parameters() == {"tolerance": 2e-9}


def test_the_agent_converges_within_the_tolerance_by_one_sigma():
    agent = ParallaxFocusAgent(tolerance=2e-9)
    point = {"mic_defocus": -110.0, "mic_astigmatism": 30.0, "mic_astigmatism_angle": -50.0}
    agent.ingest(point, _measurement(1.2e-9, 0.5e-9, 0.0, sigma=0.7e-9))
    assert agent.report()["within_tolerance"] is True
    agent.ingest(point, _measurement(1.6e-9, 0.5e-9, 0.0, sigma=0.7e-9))  # 1.6 + 0.7 > 2
    assert agent.report()["within_tolerance"] is False


def test_an_unreliable_fit_changes_nothing():
    agent = ParallaxFocusAgent()
    point = {"mic_defocus": 0.0, "mic_astigmatism": 0.0, "mic_astigmatism_angle": 0.0}
    agent.ingest(point, _measurement(0.1e-9, 0.1e-9, 0.0, reliable=False))
    assert agent.suggest(1) == [{}]
    report = agent.report()
    assert report["within_tolerance"] is False
    assert report["decision"] == "fit not reliable: measure again"
