"""bluestem.session — build a RunEngine session from a device inventory (docs/session.md)."""

from .build import Session, build_session
from .config import DeviceSpec, SessionConfig, expand_env, load_config

__all__ = ["DeviceSpec", "Session", "SessionConfig", "build_session", "expand_env", "load_config"]
