"""Bad-input fuzzing of the IOC's CA puts (hypothesis): NaN, ±inf, huge numbers, wrong
types, random and over-long file names and paths, against the real ``bluestem ioc sim``.

Each put is either refused — the put fails naming the PV, the setpoint keeps its value —
or accepted with a finite value inside the PV's control limits; a file name is accepted
exactly when it is a plain stem; a file path only inside the data root. Afterwards the
IOC is up, nothing was written outside the data root, and a file written before the
fuzzing keeps its SHA-256.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ioc_client import configure_scan, run_scan
from test_ioc_pvs import list_pvs

pytestmark = pytest.mark.system

# Not fuzzed: they start or end an acquisition, or accept any value (triggers), or are
# strings (fuzzed below).
SKIP = {"DET:HDF1:Capture", "DET:cam1:Acquire", "SCAN:Start", "SCAN:Stop", "SCAN:Abort",
        "STATUS:Acknowledge", "DET:HDF1:FilePath", "DET:HDF1:FileName",
        "DET:HDF1:FileTemplate"}  # fmt: skip
EXAMPLES = 75

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 0, -1, 2**31]),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=12),  # the wrong type
)


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def numeric(sim):
    rows = list_pvs(sim[0].prefix)
    names = [r[0][len(sim[0].prefix) :] for r in rows if r[2] == "RW"]
    found = [n for n, r in zip(names, [r for r in rows if r[2] == "RW"], strict=True)
             if n not in SKIP and not r[1].startswith("CHAR")]  # fmt: skip
    assert len(found) > 30
    return found


@pytest.fixture(scope="module")
def before(sim):
    """A file written before the fuzzing, its checksum, and the data root's listing."""
    ca, data = sim[1], sim[2]
    configure_scan(ca, shape=(4, 4), frame=16, name="before-fuzz")
    path = run_scan(ca)
    return path, _digest(path), data


def _limits(ca, name):
    meta = ca.read(name, data_type="control").metadata
    low, high = float(meta.lower_ctrl_limit), float(meta.upper_ctrl_limit)
    return (low, high) if high > low else None


def _refused_or_in_range(ca, name, value) -> bool:
    """Put ``value``; check the outcome; True if it was refused."""
    previous = ca.get(name)
    try:
        ca.put(name, value)
    except Exception as exc:  # ErrorResponseReceived, or the client refusing the type
        assert ca.get(name) == previous or (
            isinstance(previous, float) and math.isnan(previous)
        ), f"{name}: refused {value!r} but changed"
        from caproto import ErrorResponseReceived

        if isinstance(exc, ErrorResponseReceived):  # the IOC's refusal names the PV
            assert name in str(exc), str(exc)
        return True
    now = ca.get(name)
    if isinstance(now, float):
        assert math.isfinite(now), f"{name} accepted {value!r} and holds {now!r}"
        limits = _limits(ca, name)
        if limits is not None:
            assert limits[0] <= now <= limits[1], f"{name}={now!r} outside {limits}"
    return False


# caproto's client casts a NaN put to a LONG PV (a huge integer, refused by the IOC).
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_fuzzed_numeric_puts_are_refused_or_land_in_range(sim, numeric, before):
    ioc, ca, _ = sim
    touched: dict[str, object] = {}
    outcomes = {"refused": 0, "accepted": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(name=st.sampled_from(numeric), value=NUMBERS)
    def put(name, value):
        touched.setdefault(name, ca.get(name))
        refused = _refused_or_in_range(ca, name, value)
        outcomes["refused" if refused else "accepted"] += 1

    try:
        put()
    finally:
        for name, value in touched.items():  # an accepted write also clears a flag
            ca.put(name, value)
    print(f"fuzzed {sum(outcomes.values())} puts on {len(touched)} PVs: {outcomes}")
    assert outcomes["refused"] > 0 and outcomes["accepted"] > 0
    _still_fine(ioc, ca, before)


def _is_stem(name: str) -> bool:
    raw = name.encode("utf-8", "surrogatepass")
    return (0 < len(raw) <= 200 and name not in (".", "..") and "/" not in name
            and not any(ord(c) < 32 or ord(c) == 127 for c in name))  # fmt: skip


NAMES = st.one_of(
    st.text(alphabet=st.characters(codec="latin-1"), max_size=240),
    st.sampled_from(["..", ".", "", "a/b", "../x", "x" * 201, "x" * 200, "ok-name_1"]),
)
BAD_PATHS = st.one_of(st.sampled_from(["/", "/etc", "/tmp", "..", "../..", "relative/dir"]),
                      st.text(alphabet="/.abc", max_size=30))  # fmt: skip


def test_fuzzed_file_names_and_paths_only_ever_name_files_in_the_data_root(sim, before):
    ioc, ca, data = sim
    name0, path0 = ca.get_str("DET:HDF1:FileName"), ca.get_str("DET:HDF1:FilePath")
    counts = {"name_ok": 0, "name_refused": 0, "path_ok": 0, "path_refused": 0}

    (data / "sub").mkdir(exist_ok=True)
    good = [str(data), str(data / "sub"), f"{data}/sub/..", f"{data}/../{data.name}"]
    paths = st.one_of(BAD_PATHS, st.sampled_from(good))

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(name=NAMES, path=paths)
    def put(name, path):
        try:
            ca.put("DET:HDF1:FileName", name)
            accepted = True
        except Exception:
            accepted = False
        # A CHAR waveform's string ends at its first NUL: that is the name the IOC sees.
        seen = name.split("\x00", 1)[0]
        if len(name.encode("latin-1")) < 256:  # longer: caproto refuses the length itself
            assert accepted == _is_stem(seen), (name, accepted)
        if accepted:
            assert ca.get_str("DET:HDF1:FileName") == seen
        counts["name_ok" if accepted else "name_refused"] += 1
        try:
            ca.put("DET:HDF1:FilePath", path)
            accepted = True
        except Exception:
            accepted = False
        if accepted:
            now = Path(ca.get_str("DET:HDF1:FilePath")).resolve()
            assert now == data.resolve() or data.resolve() in now.parents, now
        counts["path_ok" if accepted else "path_refused"] += 1

    try:
        put()
    finally:
        ca.put("DET:HDF1:FileName", name0)
        ca.put("DET:HDF1:FilePath", path0)
    print(f"fuzzed file names and paths: {counts}")
    assert all(counts.values()), counts
    _still_fine(ioc, ca, before)


def _still_fine(ioc, ca, before) -> None:
    path, sha, data = before
    assert ioc.alive()
    assert _digest(path) == sha
    assert ca.get("STATUS") == "OK", ca.get_str("STATUS:Message")
    configure_scan(ca, shape=(2, 2), frame=16, name="after-fuzz")
    written = Path(run_scan(ca))
    assert data.resolve() in written.resolve().parents  # a scan still writes, inside
