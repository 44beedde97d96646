"""bluestem.loop — closed-loop experiments: the agent protocol and the loop's record.

The plan is :func:`bluestem.plans.closed_loop`; this package is what it needs below the
devices (agents decide, the record says what was decided and why, and reads it back).
See docs/loop.md.
"""

from bluestem.loop.agent import (
    Agent,
    AgentProtocol,
    OptimizerAgent,
    TellAskAgent,
    agent_info,
    as_agent,
    make_agent,
)
from bluestem.loop.overlap import OverlapFit, fit_overlap, overlap_phase
from bluestem.loop.pacbed_fit import (
    Alignment,
    PacbedFit,
    PacbedThicknessAgent,
    fit_pacbed,
)
from bluestem.loop.record import (
    FAILURE_STREAM,
    ITERATIONS_STREAM,
    RESTORE_STREAM,
    IterationRow,
    LoopRecord,
    LoopResult,
    read_loop,
    replay_decisions,
    to_json,
    to_plain,
)

# Analyses (the measurements closed loops fit: parallax, PACBED thickness, ...) are
# exported here as they are written, e.g. ``from bluestem.loop.parallax import ...``.
# bluestem.plans imports this package: an analysis that loads numba (or the twin's
# kernels) must be exported lazily (a PEP 562 ``__getattr__``, as bluestem.reduce does),
# or importing the plans loads numba (tests/unit/test_architecture.py checks it).

__all__ = [
    "FAILURE_STREAM",
    "ITERATIONS_STREAM",
    "RESTORE_STREAM",
    "Agent",
    "AgentProtocol",
    "Alignment",
    "IterationRow",
    "LoopRecord",
    "LoopResult",
    "OptimizerAgent",
    "OverlapFit",
    "PacbedFit",
    "PacbedThicknessAgent",
    "TellAskAgent",
    "agent_info",
    "as_agent",
    "fit_overlap",
    "fit_pacbed",
    "make_agent",
    "overlap_phase",
    "read_loop",
    "replay_decisions",
    "to_json",
    "to_plain",
]
