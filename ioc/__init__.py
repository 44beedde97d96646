"""bluestem.ioc — caproto soft IOCs and their backends.

This package never imports ophyd or bluesky's RunEngine: the IOC is a separate process
that talks to sessions only over Channel Access (see docs/architecture.md).
"""

__all__: list[str] = []
