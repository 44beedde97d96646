"""The session inventory: a YAML file (or mapping) naming devices, paths, catalogue, metadata.

Validation happens here, before anything is created, so that a typo in a profile is a
``ValueError`` naming the key, the value and what is allowed, never a half-built session.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .suspenders import check_suspenders

__all__ = ["CONTROL_LAYERS", "DeviceSpec", "SessionConfig", "expand_env", "load_config"]

TOP_KEYS = ("devices", "data_root", "journal_dir", "catalog", "metadata", "ca", "baseline",
            "connect_timeout", "progress", "namespace", "live", "control_layer",
            "notify", "suspenders")  # fmt: skip
#: ophyd's EPICS client libraries: caproto (pure Python) or pyepics (libca).
CONTROL_LAYERS = ("caproto", "pyepics")
DEVICE_KEYS = ("class", "prefix", "name")
CATALOG_KEYS = ("uri", "api_key", "batch_size", "exit_timeout")
LIVE_KEYS = ("reduce", "images", "out_dir", "verify")
LIVE_IMAGES = (True, False, "auto")
CA_KEYS = {
    "addr_list": "EPICS_CA_ADDR_LIST",
    "auto_addr_list": "EPICS_CA_AUTO_ADDR_LIST",
    "server_port": "EPICS_CA_SERVER_PORT",
    "repeater_port": "EPICS_CA_REPEATER_PORT",
    "max_array_bytes": "EPICS_CA_MAX_ARRAY_BYTES",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class DeviceSpec:
    """One inventory entry: the class, its PV prefix, its name, extra keyword arguments."""

    cls: type
    prefix: str
    name: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SessionConfig:
    """A validated inventory (see ``docs/session.md``)."""

    devices: tuple[DeviceSpec, ...]
    data_root: Path | None = None
    journal_dir: Path | None = None
    catalog: dict | None = None
    metadata: dict = field(default_factory=dict)
    ca: dict = field(default_factory=dict)  # EPICS_* environment variables
    baseline: tuple[str, ...] | None = None
    connect_timeout: float = 10.0
    progress: bool = True
    namespace: tuple[str, ...] = ()  # modules whose __all__ go into the shell namespace
    live: dict = field(default_factory=lambda: _live(None))  # live reduction and images
    control_layer: str = "caproto"  # ophyd.set_cl: caproto or pyepics (libca)
    notify: dict | None = None  # bluestem.notify.Notifier.from_config
    suspenders: dict = field(default_factory=dict)  # bluestem.session.suspenders


def expand_env(value: Any, key: str, env: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``value``.

    An unset variable without a default is a ``ValueError`` naming the key.
    """
    env = os.environ if env is None else env
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            if m.group(1) in env:
                return env[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            raise ValueError(
                f"{key}={value!r}: environment variable {m.group(1)} is not set "
                f"(allowed: set it, or write ${{{m.group(1)}:-default}})"
            )

        return _VAR.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: expand_env(v, f"{key}.{k}", env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [expand_env(v, f"{key}[{i}]", env) for i, v in enumerate(value)]
    return value


def _unknown(where: str, keys, allowed) -> None:
    extra = [k for k in keys if k not in allowed]
    if extra:
        raise ValueError(f"{where}: unknown key {extra[0]!r}; allowed: {', '.join(allowed)}")


def _import_class(key: str, path: Any) -> type:
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"{key}={path!r}: allowed a dotted class path such as "
                         "'bluestem.devices.Microscope'")  # fmt: skip
    module, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"{key}={path!r}: cannot import it ({exc}); allowed an importable "
            "ophyd Device class such as 'bluestem.devices.Microscope'"
        ) from None
    if not isinstance(cls, type):
        raise ValueError(f"{key}={path!r}: is not a class; allowed an ophyd Device class")
    return cls


def _device(i: int, entry: Any, data_root: Path | None) -> DeviceSpec:
    key = f"devices[{i}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{key}={entry!r}: allowed a mapping with keys class, prefix, name")
    for k in DEVICE_KEYS:
        if k not in entry:
            raise ValueError(f"{key}: missing key {k!r}; required: {', '.join(DEVICE_KEYS)}")
    cls = _import_class(f"{key}.class", entry["class"])
    prefix, name = entry["prefix"], entry["name"]
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"{key}.prefix={prefix!r}: allowed a non-empty PV prefix string")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{key}.name={name!r}: allowed a Python identifier (letters, digits, _)")
    kwargs = {k: v for k, v in entry.items() if k not in DEVICE_KEYS}
    # Any class taking root_path (a detector whose IOC writes files) gets data_root.
    if _takes(cls, "root_path") and "root_path" not in kwargs:
        if data_root is None:
            raise ValueError(f"{key} ({name}): a detector needs root_path or a top-level "
                             "data_root; allowed: a directory path")  # fmt: skip
        kwargs["root_path"] = str(data_root)
    return DeviceSpec(cls, prefix, name, kwargs)


def _takes(cls: type, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _modules(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"namespace={value!r}: allowed a list of module names")
    for i, name in enumerate(value):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(
                f"namespace[{i}]={name!r}: cannot import it ({exc}); allowed "
                "importable modules such as 'bluestem.plans'"
            ) from None
    return tuple(value)


def _path(key: str, value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError(f"{key}={value!r}: allowed a directory path")
    return Path(value).expanduser()


def _live(value: Any) -> dict:
    """``live:``: reduce (bool), images (true, false or auto), out_dir (PNGs), verify."""
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise ValueError(f"live={value!r}: allowed a mapping with keys {', '.join(LIVE_KEYS)}")
    _unknown("live", value, LIVE_KEYS)
    live = {"reduce": True, "images": "auto", "out_dir": None, "verify": True, **value}
    for key in ("reduce", "verify"):
        if not isinstance(live[key], bool):
            raise ValueError(f"live.{key}={live[key]!r}: allowed true or false")
    if live["images"] not in LIVE_IMAGES or not isinstance(live["images"], bool | str):
        raise ValueError(f"live.images={live['images']!r}: allowed true, false or auto")
    live["out_dir"] = _path("live.out_dir", live["out_dir"])
    return live


def _notify(value: Any) -> dict | None:
    """``notify:``: its keys checked now, its sinks made by the session."""
    if value is None:
        return None
    from bluestem.notify import NOTIFY_KEYS

    if not isinstance(value, Mapping):
        raise ValueError(f"notify={value!r}: allowed a mapping with keys {', '.join(NOTIFY_KEYS)}")
    _unknown("notify", value, NOTIFY_KEYS)
    return dict(value)


def load_config(config: Mapping | str | os.PathLike) -> SessionConfig:
    """Read (if a path), expand ``${VAR}`` and validate an inventory.

    Raises
    ------
    ValueError
        Naming the key, the value and what is allowed.
    FileNotFoundError
        When ``config`` is a path that does not exist.
    """
    if isinstance(config, str | os.PathLike):
        import yaml

        path = Path(config)
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        where = str(path)
    else:
        raw, where = config, "config"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: allowed a mapping at the top level, got {type(raw).__name__}")
    _unknown(where, raw, TOP_KEYS)
    raw = {k: expand_env(v, k) for k, v in raw.items()}

    data_root = _path("data_root", raw.get("data_root"))
    devices = raw.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ValueError(f"devices={devices!r}: allowed a non-empty list of "
                         "{class, prefix, name} entries")  # fmt: skip
    specs = tuple(_device(i, e, data_root) for i, e in enumerate(devices))
    names = [s.name for s in specs]
    for n in names:
        if names.count(n) > 1:
            raise ValueError(f"devices: name {n!r} used twice; allowed unique names")

    catalog = raw.get("catalog")
    if isinstance(catalog, Mapping) and catalog.get("uri") == "":
        catalog = None  # `uri: "${VAR:-}"` with VAR unset: no catalogue
    if catalog is not None:
        if not isinstance(catalog, Mapping) or not catalog.get("uri"):
            raise ValueError(f"catalog={catalog!r}: allowed a mapping with uri (and api_key)")
        _unknown("catalog", catalog, CATALOG_KEYS)
        uri = str(catalog["uri"])
        if not uri.startswith(("http://", "https://")):
            raise ValueError(f"catalog.uri={uri!r}: allowed an http:// or https:// URI")
        catalog = dict(catalog)
        wait = catalog.get("exit_timeout", 30.0)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 3600:
            raise ValueError(
                f"catalog.exit_timeout={wait!r}: allowed a number of seconds in [0, 3600] "
                "(how long the end of a session waits for the catalogue)"
            )
        catalog["exit_timeout"] = float(wait)

    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata={metadata!r}: allowed a mapping (sample, operator, ...)")

    ca = raw.get("ca") or {}
    if not isinstance(ca, Mapping):
        raise ValueError(f"ca={ca!r}: allowed a mapping with keys {', '.join(CA_KEYS)}")
    _unknown("ca", ca, CA_KEYS)
    ca_env = {CA_KEYS[k]: (" ".join(map(str, v)) if isinstance(v, list) else str(v))
              for k, v in ca.items()}  # fmt: skip
    if "auto_addr_list" in ca and isinstance(ca["auto_addr_list"], bool):
        ca_env["EPICS_CA_AUTO_ADDR_LIST"] = "YES" if ca["auto_addr_list"] else "NO"

    base = raw.get("baseline")
    if base is not None:
        if not isinstance(base, list) or any(b not in names for b in base):
            raise ValueError(f"baseline={base!r}: allowed a list of device names from "
                             f"{names}")  # fmt: skip
        base = tuple(base)

    timeout = raw.get("connect_timeout", 10.0)
    if not isinstance(timeout, int | float) or not 0 < timeout <= 600:
        raise ValueError(f"connect_timeout={timeout!r}: allowed a number of seconds in (0, 600]")

    progress = raw.get("progress", True)
    if not isinstance(progress, bool):
        raise ValueError(f"progress={progress!r}: allowed true or false")

    layer = raw.get("control_layer", "caproto")
    if layer not in CONTROL_LAYERS:
        raise ValueError(f"control_layer={layer!r}: allowed {', '.join(CONTROL_LAYERS)}")

    return SessionConfig(
        devices=specs,
        data_root=data_root,
        journal_dir=_path("journal_dir", raw.get("journal_dir")),
        catalog=catalog,
        metadata=dict(metadata),
        ca=ca_env,
        baseline=base,
        connect_timeout=float(timeout),
        progress=progress,
        namespace=_modules(raw.get("namespace")),
        live=_live(raw.get("live")),
        control_layer=layer,
        notify=_notify(raw.get("notify")),
        suspenders=check_suspenders(raw.get("suspenders")),
    )
