"""LoopView from synthetic document streams: umbrella runs (interleaved with their
acquisitions) give a progress line and a PNG per iteration, other runs are ignored, bad
parameters are refused."""

from __future__ import annotations

import io
import math
import struct

import event_model
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from bluestem.callbacks import LoopView
from bluestem.callbacks.loop_figures import figure_size, loop_figure, panels
from bluestem.loop.record import iteration_data

DPI = 50
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk of a PNG file (which must be one)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def autofocus_measurement(i: int) -> dict:
    c1 = 120e-9 / 10**i  # each correction takes off 90 %
    return {"method": "BF parallax (tcBF) fit of C1, A1", "parameters": {"shape": [48, 48]},
            "values": {"c1": c1, "a1": 30e-9 / 10**i, "a1_angle": 0.7},
            "uncertainties": {"c1": 1e-9, "a1": 1e-9, "a1_angle": 0.05},
            "units": {"c1": "m", "a1": "m", "a1_angle": "rad"}, "reliable": True}  # fmt: skip


def pacbed_measurement(i: int) -> dict:
    t = np.linspace(2e-9, 60e-9, 30)
    yy, xx = np.mgrid[:16, :16] - 7.5
    disc = (np.hypot(yy, xx) < 5) * 100.0 + 1
    return {"method": "PACBED library fit (LeBeau et al. 2010)",
            "values": {"thickness": 20.1e-9}, "uncertainties": {"thickness": 0.1e-9},
            "fit": {"thickness": 20.1e-9, "uncertainty": 0.1e-9,
                    "library_thicknesses": t.tolist(),
                    "reduced_chi2": (1 + ((t - 20e-9) / 5e-9) ** 2).tolist()},
            "patterns": {"measured": disc.astype(int).tolist(), "best": (disc * 0.98).tolist(),
                         "binning": 1, "best_thickness": 20e-9}}  # fmt: skip


def loop_stream(measure, n: int, *, goal, budget: int = 5, acquisitions: bool = True,
                decisions=None):  # fmt: skip
    """The documents of a loop of ``n`` iterations, as the RunEngine interleaves them:
    umbrella start, then each acquisition's run, then the umbrella's iteration event."""
    umbrella = event_model.compose_run(metadata={
        "plan_name": "closed_loop",
        "closed_loop": {"role": "umbrella", "agent": {"class": "tests.FakeAgent"},
                        "goal": goal, "budget": {"max_iterations": budget},
                        "settings": ["mic_defocus"]},
    })  # fmt: skip
    docs = [("start", umbrella.start_doc)]
    keys = {k: {"source": "loop", "dtype": "string", "shape": []}
            for k in ("requested", "readback", "inputs", "method", "analysis", "report",
                      "decision")}  # fmt: skip
    keys |= {"iteration": {"source": "loop", "dtype": "integer", "shape": []},
             "mic_defocus": {"source": "loop", "dtype": "number", "shape": []}}  # fmt: skip
    desc = umbrella.compose_descriptor(name="iterations", data_keys=keys)
    docs.append(("descriptor", desc.descriptor_doc))
    decisions = decisions or ["continue"] * (n - 1) + ["converged"]
    for i in range(n):
        acq = event_model.compose_run(metadata={
            "plan_name": "raster", "scan": {"shape": [4, 4]},
            "closed_loop": {"uid": umbrella.start_doc["uid"], "iteration": i,
                            "role": "acquisition"},
        })  # fmt: skip
        if acquisitions:
            primary = acq.compose_descriptor(
                name="primary", data_keys={"x": {"source": "x", "dtype": "number", "shape": []}}
            )
            docs += [("start", acq.start_doc), ("descriptor", primary.descriptor_doc),
                     ("event", primary.compose_event(data={"x": 1.0}, timestamps={"x": 0.0})),
                     ("stop", acq.compose_stop())]  # fmt: skip
        data = iteration_data(
            iteration=i, requested={} if i == 0 else {"mic_defocus": -10.0 * i},
            readback={"mic_defocus": -10.0 * i}, inputs=[acq.start_doc["uid"]],
            measurement=measure(i), report={"decision": f"agent step {i}"},
            decision=decisions[i],
        )  # fmt: skip
        event = desc.compose_event(data=data, timestamps=dict.fromkeys(data, 0.0))
        docs.append(("event", event))
    stop = umbrella.compose_stop(exit_status="success", reason=f"converged after {n} iteration(s)")
    docs.append(("stop", stop))
    return umbrella.start_doc["uid"], docs


def feed(view, docs) -> None:
    for name, doc in docs:
        view(name, doc)


def test_a_png_and_a_line_per_iteration(tmp_path):
    out = io.StringIO()
    view = LoopView(out_dir=tmp_path, headless=True, stream=out, dpi=DPI)
    uid, docs = loop_stream(autofocus_measurement, 3, goal={"autofocus": "null C1 and A1"})
    feed(view, docs)
    assert view.error is None
    tag = uid[:8]
    # a1, a1_angle, c1 (the record's JSON sorts the keys), the defocus read back (it
    # changed), the A1 plane: 5 panels
    record = view.records[uid]
    assert [n for n, _ in panels(record)] == ["value a1", "value a1_angle", "value c1",
                                              "settings", "a1"]  # fmt: skip

    def pixels(n_panels):
        width, height = figure_size(n_panels)
        return round(width * DPI), round(height * DPI)

    # at iteration 0 no setting has changed yet: no settings panel
    assert png_size(tmp_path / f"loop-{tag}-it00.png") == pixels(4)
    for i in (1, 2):
        assert png_size(tmp_path / f"loop-{tag}-it{i:02d}.png") == pixels(5)
    assert png_size(tmp_path / f"loop-{tag}-latest.png") == pixels(5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"loop-{tag}-it{i:02d}.png" for i in range(3)] + [f"loop-{tag}-latest.png"]
    )
    lines = out.getvalue().splitlines()
    assert lines == view.lines and len(lines) == 5  # start, 3 iterations, end
    assert lines[0].startswith("closed loop autofocus: null C1 and A1: started " + tag)
    for i in range(3):
        assert f": iteration {i} [" in lines[1 + i]
        assert f"{i + 1}/5" in lines[1 + i]
        assert f"(agent step {i})" in lines[1 + i]
    assert "-> continue" in lines[1] and "-> converged" in lines[3]
    assert "c1=120±1 nm" in lines[1] and "a1=30±1 nm" in lines[1]
    assert "a1_angle=40.11±2.9 deg" in lines[1]
    assert lines[4].endswith(f"success (converged after 3 iteration(s)), 3 iteration(s), {tag}")


def test_the_pacbed_record_gets_its_fit_and_patterns(tmp_path):
    view = LoopView(out_dir=tmp_path, headless=True, stream=io.StringIO(), dpi=DPI)
    goal = {"quantity": "specimen thickness", "units": "m", "method": "PACBED"}
    uid, docs = loop_stream(pacbed_measurement, 1, goal=goal, budget=3)
    feed(view, docs)
    assert view.error is None
    record = view.records[uid]
    assert [n for n, _ in panels(record)] == ["value thickness", "pacbed fit",
                                              "pacbed measured", "pacbed best"]  # fmt: skip
    width, height = figure_size(4)  # one row of four
    expected = (round(width * DPI), round(height * DPI))
    assert png_size(tmp_path / f"loop-{uid[:8]}-it00.png") == expected
    assert "closed loop specimen thickness: iteration 0 [" in view.lines[1]
    assert "thickness=20.1±0.1 nm" in view.lines[1] and "1/3" in view.lines[1]


def survey_measurement(i: int) -> dict:
    features = [{"y_nm": -5.0, "x_nm": 8.0, "radius_nm": 2.0},
                {"y_nm": 6.0, "x_nm": -4.0, "radius_nm": 1.5}]  # fmt: skip
    if i == 0:
        return {"method": "features", "role": "survey", "features": features,
                "values": {"features": 2}, "units": {"features": ""},
                "image_shape": [40, 40], "step_nm": [1.0, 1.0]}  # fmt: skip
    if i == 1:
        return {"method": "drift", "role": "track", "drift_nm": [0.3, -0.2],
                "values": {"drift_y": 0.3e-9, "drift_x": -0.2e-9},
                "units": {"drift_y": "m", "drift_x": "m"}}  # fmt: skip
    return {"method": "centring", "role": "fine", "target": features[0], "found": True,
            "centring_nm": [0.1, -0.05], "values": {"centring_error": 0.11e-9},
            "units": {"centring_error": "m"}}  # fmt: skip


def test_the_survey_record_gets_a_map_from_every_iteration(tmp_path):
    view = LoopView(out_dir=tmp_path, headless=True, stream=io.StringIO(), dpi=DPI)
    uid, docs = loop_stream(survey_measurement, 3, goal={"adaptive_survey": "fine scans"})
    feed(view, docs)
    assert view.error is None
    record = view.records[uid]
    names = [n for n, _ in panels(record)]
    assert names[-1] == "survey map" and "value centring_error" in names
    for i in range(3):  # the survey's own iteration has a figure too
        assert png_size(tmp_path / f"loop-{uid[:8]}-it{i:02d}.png")[0] > 0
    assert "features=2" in view.lines[0] + view.lines[1]
    fig = loop_figure(record)
    ax = fig.axes[names.index("survey map")]
    centres = sorted(tuple(map(float, p.center)) for p in ax.patches)
    assert centres == [(-4.0, 6.0), (8.0, -5.0)]  # (x, y) of the features
    (line,) = ax.get_lines()  # the fine scan's particle: target + centring
    assert (float(line.get_xdata()[0]), float(line.get_ydata()[0])) == pytest.approx((7.95, -4.9))
    assert ax.get_xlim() == (-20.0, 20.0) and ax.get_ylim() == (20.0, -20.0)


def test_other_runs_are_ignored(tmp_path):
    view = LoopView(out_dir=tmp_path, headless=True, stream=io.StringIO())
    run = event_model.compose_run(metadata={"plan_name": "raster", "scan": {"shape": [2, 2]}})
    desc = run.compose_descriptor(name="iterations",  # even a stream of that name
                                  data_keys={"x": {"source": "x", "dtype": "number",
                                                   "shape": []}})  # fmt: skip
    acq = event_model.compose_run(metadata={"closed_loop": {"uid": "u", "iteration": 0,
                                                            "role": "acquisition"}})  # fmt: skip
    feed(view, [("start", run.start_doc), ("descriptor", desc.descriptor_doc),
                ("event", desc.compose_event(data={"x": 1.0}, timestamps={"x": 0.0})),
                ("stop", run.compose_stop()), ("start", acq.start_doc),
                ("stop", acq.compose_stop())])  # fmt: skip
    assert view.lines == [] and view.records == {} and view.error is None
    assert list(tmp_path.iterdir()) == []


def test_a_loop_without_numbers_gets_a_line_and_no_figure(tmp_path):
    view = LoopView(out_dir=tmp_path, headless=True, stream=io.StringIO())
    uid, docs = loop_stream(lambda i: {"method": "look", "values": {"where": "left"}}, 1,
                            goal="find it", acquisitions=False)  # fmt: skip
    feed(view, docs)
    line = view.lines[1]
    assert "closed loop find it: iteration 0 [" in line and "-> converged" in line
    assert " -  -> converged" in line  # no estimate to show
    assert view.error is None and view.saved == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="nothing to draw"):
        loop_figure(view.records[uid])


def test_figures_off_prints_only(tmp_path):
    out = io.StringIO()
    view = LoopView(figures=False, stream=out)
    _, docs = loop_stream(autofocus_measurement, 2, goal="focus", acquisitions=False)
    feed(view, docs)
    assert len(out.getvalue().splitlines()) == 4 and view.saved == []


def test_progress_off_keeps_the_lines_quiet(tmp_path):
    out = io.StringIO()
    view = LoopView(progress=False, out_dir=tmp_path, headless=True, stream=out, dpi=DPI)
    _, docs = loop_stream(autofocus_measurement, 1, goal="focus", acquisitions=False)
    feed(view, docs)
    assert out.getvalue() == "" and len(view.lines) == 3 and len(view.saved) == 2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"dpi": 0}, "dpi=0"),
        ({"dpi": "high"}, "dpi='high'"),
        ({"width": 2}, "width=2"),
        ({"progress": "yes"}, "progress='yes'"),
        ({"figures": 1}, "figures=1"),
        ({"headless": "auto"}, "headless='auto'"),
        ({"out_dir": ""}, "out_dir=''"),
        ({"stream": 42}, "stream=42"),
        ({"headless": True}, "out_dir=None"),
    ],
)
def test_bad_parameters_are_refused_naming_the_value(kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        LoopView(**kwargs)


def test_figure_size_is_what_the_layout_gives():
    assert figure_size(1) == (4.0, 3.7)
    assert figure_size(3) == (12.0, 3.7)
    assert figure_size(4) == (16.0, 3.7)
    assert figure_size(5) == (12.0, 6.9)
    assert math.isclose(figure_size(0)[0], 4.0)
