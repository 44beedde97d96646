"""bluestem IPython startup: one session built from the inventory in $BLUESTEM_CONFIG
(default: profiles/sim.yml next to this profile), its names put in the namespace:
``RE``, ``session``, ``catalog``, every device by name and the bluestem plans."""

import os as _os
from pathlib import Path as _Path

from bluestem.session import build_session as _build_session

globals().update(
    _build_session(
        _os.environ.get("BLUESTEM_CONFIG") or _Path(__file__).resolve().parents[2] / "sim.yml"
    ).namespace()
)
