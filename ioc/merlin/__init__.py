"""The Quantum Detectors Merlin (Medipix3) TCP protocol: messages, headers, pixel packings.

See docs/merlin.md. Importing this package imports nothing heavy; numba kernels compile
on first use (and are cached).
"""

__all__: list[str] = []
