"""Bad-input fuzzing of the raster's arguments (hypothesis): any shape, dwell, field of
view, step, rotation and flyback is either refused before the first message, with a
ValueError naming the argument and its value and the allowed range, or passes on to the
devices. Judged against an oracle written here from the documented ranges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(min_value=-5, max_value=5000), max_size=3).map(tuple),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
)
SHAPES = st.one_of(ANY, st.tuples(st.integers(-3, 5000), st.integers(-3, 5000)),
                   st.tuples(st.integers(1, 4096), st.integers(1, 4096)))  # fmt: skip
NUMBERS = st.one_of(ANY, st.floats(min_value=-2e7, max_value=2e7),
                    st.floats(min_value=-1.5, max_value=1.5))  # fmt: skip


def _number(v, low, high, low_open=False) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    x = float(v)
    return math.isfinite(x) and (x > low if low_open else x >= low) and x <= high


def _pair(v, low, high) -> bool:
    if v is None:
        return True
    if isinstance(v, list | tuple):
        return len(v) == 2 and all(_number(x, low, high, low_open=True) for x in v)
    return _number(v, low, high, low_open=True)


def _first_bad(shape, dwell, fov, step, rotation, flyback) -> str | None:
    """The first argument the documented ranges refuse (the order the plan checks)."""
    ok_shape = (
        isinstance(shape, tuple | list)
        and len(shape) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in shape)
    )
    if not ok_shape:
        return "shape"
    if fov is not None and step is not None:
        return "fov"
    for name, good in (("dwell", _number(dwell, 0.0, 1.0, low_open=True)),
                       ("fov", _pair(fov, 0.0, 1e7)), ("step", _pair(step, 0.0, 1e7)),
                       ("rotation", _number(rotation, -360.0, 360.0)),
                       ("flyback", _number(flyback, 0.0, 1.0))):  # fmt: skip
        if not good:
            return name
    return None


def test_raster_arguments_are_refused_naming_them_or_passed_on():
    from bluestem.plans import raster

    seen = {"refused": 0, "passed": 0}

    anything = st.tuples(SHAPES, NUMBERS, st.one_of(st.none(), NUMBERS),
                         st.one_of(st.none(), NUMBERS), NUMBERS, NUMBERS)  # fmt: skip
    # Arguments inside every range (so that the valid branch is always exercised too).
    valid = st.tuples(st.tuples(st.integers(1, 4096), st.integers(1, 4096)),
                      st.floats(1e-7, 1.0), st.one_of(st.none(), st.floats(1e-3, 1e7)),
                      st.none(), st.floats(-360, 360), st.floats(0, 1))  # fmt: skip

    @settings(max_examples=600, deadline=None, database=None)
    @given(args=st.one_of(anything, valid))
    def check(args):
        shape, dwell, fov, step, rotation, flyback = args
        bad = _first_bad(shape, dwell, fov, step, rotation, flyback)
        plan = raster(None, None, shape=shape, dwell=dwell, fov=fov, step=step,
                      rotation=rotation, flyback=flyback)  # fmt: skip
        if bad is None:
            # Valid geometry: the plan goes on to its devices (None here).
            with pytest.raises(AttributeError):
                next(plan)
            seen["passed"] += 1
            return
        with pytest.raises(ValueError) as info:
            next(plan)
        text = str(info.value)
        assert text.startswith(f"{bad}="), (bad, text)
        assert "allowed" in text
        seen["refused"] += 1

    check()
    assert seen["refused"] > 100 and seen["passed"] > 0, seen
