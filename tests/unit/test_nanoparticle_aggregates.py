"""Touching nanoparticles are one feature: its centre is the r³-weighted centroid
(checked by hand-computed values), also across the periodic field's edge."""

from __future__ import annotations

import numpy as np
import pytest

from bluestem.twin.nanoparticles import aggregates

NM = 1e-9


def test_separate_particles_stay_separate():
    centres = np.array([[5, 5], [20, 20], [5, 30]]) * NM
    found, members = aggregates(centres, np.full(3, 2 * NM), 40 * NM)
    assert members == [[0], [1], [2]]
    np.testing.assert_allclose(found, centres)


def test_two_touching_particles_give_their_mass_weighted_centre():
    centres = np.array([[3.02, 3.49], [3.68, 5.73], [20.0, 20.0]]) * NM
    radii = np.array([2.9, 2.55, 2.0]) * NM
    found, members = aggregates(centres, radii, 40 * NM)
    assert members == [[0, 1], [2]]
    w0, w1 = 2.9**3, 2.55**3
    y = (3.02 * w0 + 3.68 * w1) / (w0 + w1)
    x = (3.49 * w0 + 5.73 * w1) / (w0 + w1)
    assert found[0] / NM == pytest.approx([y, x], abs=1e-9)


def test_a_chain_joins_transitively_and_wraps_across_the_edge():
    # 0 touches 1 across x = 0 / 40 nm; 1 touches 2; 0 and 2 do not touch
    centres = np.array([[10.0, 39.0], [10.0, 2.0], [10.0, 5.5]]) * NM
    radii = np.array([2.0, 2.0, 2.0]) * NM
    found, members = aggregates(centres, radii, 40 * NM)
    assert members == [[0, 1, 2]]
    # unwrapped around particle 0: x = 39, 42, 45.5 -> mean 42.1667 -> wrapped 2.1667
    assert found[0] / NM == pytest.approx([10.0, (39 + 42 + 45.5) / 3 - 40], abs=1e-9)
