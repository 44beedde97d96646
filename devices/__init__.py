"""bluestem.devices — see docs/architecture.md. Populated by the session issue."""

__all__: list[str] = []
