"""The reduction executors' interface, and what importing the reduce layer loads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bluestem.reduce.executors import Block, ReductionExecutor, covered, frames_in


def _imports(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_light_modules_of_reduce_load_no_numba():
    code = (
        "import bluestem.reduce.from_run, bluestem.reduce.spec, sys; print('numba' in sys.modules)"
    )
    assert _imports(code) == "False"


def test_the_executors_load_neither_numba_nor_dask_at_import():
    heavy = ("numba", "dask", "distributed", "h5py")
    code = (
        f"import sys, bluestem.reduce.executors; print([m for m in {heavy} if m in sys.modules])"
    )
    assert _imports(code) == "[]"


def test_the_plans_names_from_the_package_load_no_numba():
    code = ("from bluestem.reduce import check_reductions, resolve_reductions, ReductionSpec; "
            "import sys; print('numba' in sys.modules)")  # fmt: skip
    assert _imports(code) == "False"


def test_the_package_is_lazy_and_keeps_its_names():
    import bluestem.reduce as reduce

    assert sorted(reduce.__all__) == reduce.__all__
    for name in reduce.__all__:
        assert getattr(reduce, name) is not None, name
    assert set(reduce.__all__) <= set(dir(reduce))
    from bluestem.reduce.reducer import Reducer

    assert reduce.Reducer is Reducer
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = reduce.no_such_name


class _Minimal(ReductionExecutor):
    """Only what an executor must have: reduce and result."""

    def __init__(self):
        self.blocks = []

    def reduce(self, block):
        self.blocks.append(block)

    def result(self):
        return self.blocks


def test_the_optional_capabilities_default_to_nothing():
    ex = _Minimal()
    block = Block("/f.h5", "/d", first=0, count=4, position=0)
    assert ex.on_progress is None and ex.reads_ahead is False
    assert ex.watch(block) is None
    assert not ex.follow() and ex.follow() == 0
    assert ex.reduce_late() == 0
    assert ex.live_images() == {}
    assert ex.close() is None
    ex.reduce(block)
    assert ex.result() == [block]
    with pytest.raises(TypeError):
        ReductionExecutor()  # reduce and result are abstract


def test_blocks_cover_their_positions():
    blocks = [Block("f", "d", first=0, count=3, position=2), Block("f", "d", 5, 2, 7)]
    assert frames_in(blocks) == 5
    np.testing.assert_array_equal(covered(blocks, 10), [0, 0, 1, 1, 1, 0, 0, 1, 1, 0])


def test_the_kernel_layout_names_a_column_per_detector():
    from bluestem.reduce import ReductionSpec
    from bluestem.reduce.layout import KernelLayout, build_layout

    spec = ReductionSpec.default((16, 16))
    layout = build_layout(spec)
    assert isinstance(layout, KernelLayout)
    assert list(layout.detector_cols) == list(spec.masks())
    assert layout.weights.shape[1:] == (16, 16)
