"""A twin reused for another acquisition renders exactly what a fresh twin renders."""

from __future__ import annotations

import numpy as np
import pytest

from bluestem.ioc.backend import TwinReuse, twin_from_parameters, twin_parameters
from bluestem.twin import Optics, ScanGeometry


def params(**changes):
    base = {
        "optics": {"high_tension": 200e3, "convergence_semi_angle": 20e-3, "defocus": 0.0,
                   "astigmatism": 0.0, "astigmatism_angle": 0.0, "cs": 1.2e-3},
        "detector": {"shape": (32, 32), "pixel_size": 55e-6, "camera_length": 0.1,
                     "counter_depth": 12, "binning": 1},
        "scan": {"shape": (4, 5), "step": (0.3e-10, 0.3e-10), "rotation": 0.0, "flyback": 0.0},
        "specimen": "srtio3",
        "dose_per_frame": 500.0,
        "seed": 3,
    }  # fmt: skip
    for key, value in changes.items():
        if key in ("optics", "scan"):
            base[key] = base[key] | value
        else:
            base[key] = value
    return twin_parameters(**base)


def test_for_acquisition_matches_a_fresh_twin_and_shares_the_cache():
    first = twin_from_parameters(params())
    first.render(0, 20)
    other = params(scan={"shape": (3, 6), "rotation": 0.4}, dose_per_frame=900.0, seed=11)
    reused = first.for_acquisition(
        ScanGeometry(shape=(3, 6), step=(0.3e-10, 0.3e-10), rotation=0.4),
        dose_per_frame=900.0,
        seed=11,
    )
    fresh = twin_from_parameters(other)
    assert np.array_equal(reused.render(0, 18), fresh.render(0, 18))
    assert reused.cache_info["entries"] == first.cache_info["entries"] > 0
    assert reused.dose_per_frame == 900.0 and first.dose_per_frame == 500.0
    assert reused.seed == 11 and first.seed == 3


def test_for_acquisition_refuses_bad_arguments():
    twin = twin_from_parameters(params())
    with pytest.raises(ValueError, match=r"dose_per_frame must be in \[0, 1e12\].*-1"):
        twin.for_acquisition(ScanGeometry(shape=(2, 2)), dose_per_frame=-1)
    with pytest.raises(TypeError, match="scan must be a ScanGeometry"):
        twin.for_acquisition((2, 2), dose_per_frame=1.0)


def test_twin_reuse_shares_only_while_optics_detector_and_specimen_are_equal():
    pool = TwinReuse()
    a = pool.twin_for(params())
    a.render(0, 20)
    b = pool.twin_for(params(seed=4, dose_per_frame=10.0, scan={"shape": (2, 2)}))
    assert b._cache is a._cache  # only scan, dose and seed changed
    assert np.array_equal(b.render(0, 4), twin_from_parameters(
        params(seed=4, dose_per_frame=10.0, scan={"shape": (2, 2)})).render(0, 4))  # fmt: skip
    c = pool.twin_for(params(optics={"defocus": -20e-9}))
    assert c._cache is not b._cache and c.optics == Optics(defocus=-20e-9)
    d = pool.twin_for(params(specimen="vacuum", optics={"defocus": -20e-9}))
    assert d._cache is not c._cache
