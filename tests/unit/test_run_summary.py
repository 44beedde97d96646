"""RunSummary and the lattice sampling check, on hand-made documents."""

from __future__ import annotations

import io

import event_model
import pytest

from bluestem.callbacks.summary import RunSummary
from bluestem.reduce.sampling import KNOWN_LATTICES, lattice_period_nm, sampling_problems


def raw_run(step_nm=0.0156, sample="SrTiO3", status="success", reason=""):
    run = event_model.compose_run(metadata={
        "plan_name": "raster", "detectors": ["det"], "sample": sample,
        "scan": {"shape": [4, 4], "step": [step_nm, step_nm]},
    })  # fmt: skip
    desc = run.compose_descriptor(name="primary", data_keys={
        "det_image": {"source": "x", "dtype": "array", "shape": [4, 8, 8],
                      "external": "STREAM:"},
    })  # fmt: skip
    bundle = event_model.ComposeStreamResource()(
        mimetype="application/x-hdf5", uri="file://localhost/data/raw/det-1_000001.h5",
        data_key="det_image", parameters={"dataset": "/d"},
    )  # fmt: skip
    resource = {**bundle.stream_resource_doc, "run_start": run.start_doc["uid"]}  # the RE's
    datum = bundle.compose_stream_datum(indices=event_model.StreamRange(start=0, stop=4))
    datum["descriptor"] = desc.descriptor_doc["uid"]
    stop = run.compose_stop(exit_status=status, reason=reason)
    return run.start_doc, [
        ("start", run.start_doc),
        ("descriptor", desc.descriptor_doc),
        ("stream_resource", resource),
        ("stream_datum", datum),
        ("stop", {**stop, "num_events": {"primary": 4}}),
    ]


def derived_run(parent, dpc=None):
    run = event_model.compose_run(metadata={
        "parent_uid": parent["uid"], "images": ["bf", "adf"], "dpc": dpc or {},
    })  # fmt: skip
    return [("start", run.start_doc), ("stop", run.compose_stop())]


def feed(summary, docs):
    for name, doc in docs:
        summary(name, doc)


def test_the_summary_names_the_run_file_derived_run_and_how_to_read_them():
    out = io.StringIO()
    summary = RunSummary(catalog_uri="http://host:8000", stream=out)
    start, docs = raw_run()
    derived = derived_run(start)
    feed(summary, docs[:-1])
    feed(summary, derived)  # the live reduction emits it before the raw stop reaches us
    feed(summary, docs[-1:])
    first, second = summary.lines
    uid, duid = start["uid"], derived[0][1]["uid"]
    assert first == (f"raster {uid} success: 4 event(s) of frames in "
                     f"/data/raw/det-1_000001.h5; derived run {duid} (bf, adf)")  # fmt: skip
    assert f"c = from_uri('http://host:8000', api_key=KEY); c[\"{uid}\"]" in second
    assert '["primary"]["det_image"]' in second and f'c["{duid}"]["primary"]["bf"][0]' in second
    assert f"bluestem reduce {uid[:8]}" in second
    assert out.getvalue() == first + "\n" + second + "\n"


def test_a_failed_run_says_why_and_a_journal_only_session_says_where():
    summary = RunSummary(journal_dir="/data/journal", stream=io.StringIO())
    start, docs = raw_run(status="abort", reason="aborted by the operator (RE.abort())")
    feed(summary, docs)
    first, second = summary.lines
    assert f"raster {start['uid']} abort (aborted by the operator (RE.abort()))" in first
    assert second == "  journal only: /data/journal (bluestem sync uploads it)"


def test_an_undersampled_raster_is_warned_at_its_start_and_at_its_end():
    summary = RunSummary(stream=io.StringIO())
    start, docs = raw_run(step_nm=0.2)
    feed(summary, docs[:1])
    (warning,) = summary.lines
    assert warning.startswith(f"warning: run {start['uid'][:8]}: the scan step 0.2 nm "
                              "undersamples the lattice (SrTiO3")  # fmt: skip
    assert "0.3905 nm" in warning
    feed(summary, docs[1:])
    assert summary.lines[-1].startswith("  warning: the scan step 0.2 nm undersamples")


def test_a_poorly_determined_dpc_rotation_is_warned():
    summary = RunSummary(stream=io.StringIO())
    start, docs = raw_run()
    dpc = {"rotation_deg": -30.0, "problems": ["the flip is a guess (significance 0.9 < 2.0)"]}
    feed(summary, docs[:-1] + derived_run(start, dpc) + docs[-1:])
    assert summary.lines[1] == ("  warning: DPC rotation -30.0 deg is poorly determined: "
                                "the flip is a guess (significance 0.9 < 2.0)")  # fmt: skip


@pytest.mark.parametrize(
    ("step", "problem"),
    [(0.2, "undersamples"), (0.15, "fewer than 4 samples"), (0.09, None), (0.0156, None)],
)
def test_sampling_against_nyquist(step, problem):
    period = KNOWN_LATTICES["srtio3"][0]
    found = sampling_problems({"sample": "srtio3", "scan": {"step": [step / 2, step]}})
    if problem is None:
        assert found == [] and step <= period / 4
    else:
        (text,) = found
        assert problem in text and f"{step:g} nm" in text and f"{period:g} nm" in text


def test_the_period_can_be_given_and_unknown_samples_are_not_judged():
    assert lattice_period_nm({"sample": "mystery"}) is None
    assert sampling_problems({"sample": "mystery", "scan": {"step": [5.0, 5.0]}}) == []
    assert lattice_period_nm({"sample": "x", "lattice_period_nm": 1.5})[0] == 1.5
    (text,) = sampling_problems({"lattice_period_nm": 1.5, "scan": {"step": [1.0, 1.0]}})
    assert "lattice_period_nm = 1.5 nm" in text


def test_a_run_that_wrote_no_file_is_summarised_too():
    """A configuration that failed: start and stop, no stream resource."""
    summary = RunSummary(stream=io.StringIO())
    start, docs = raw_run(status="fail", reason="configuration failed: PutRefused: ...")
    feed(summary, [docs[0], docs[-1]])
    assert summary.lines == [f"raster {start['uid']} fail (configuration failed: PutRefused: ...)"]


def test_a_closed_loops_umbrella_run_points_to_loop_show():
    out = io.StringIO()
    summary = RunSummary(catalog_uri="http://host:8000", stream=out)
    run = event_model.compose_run(metadata={
        "plan_name": "closed_loop", "closed_loop": {"role": "umbrella", "goal": "focus"},
    })  # fmt: skip
    feed(summary, [("start", run.start_doc), ("stop", run.compose_stop())])
    uid = run.start_doc["uid"]
    first, second = summary.lines
    assert first == f"closed_loop {uid} success"
    assert f"bluestem loop show {uid[:8]}" in second and "bluestem reduce" not in second
