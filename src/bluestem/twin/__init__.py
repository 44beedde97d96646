"""The physics twin of a 4D-STEM instrument: probe, specimen and counting detector.

Nothing happens at import time beyond defining the API (numba kernels compile on first
use, or load from numba's on-disk cache).
"""

from bluestem.twin.detector import DetectorModel
from bluestem.twin.faults import FaultSchedule
from bluestem.twin.grid import SimulationGrid
from bluestem.twin.multislice import Multislice
from bluestem.twin.pacbed import PacbedLibrary, pacbed_library
from bluestem.twin.probe import Optics, aberration_function, probe_wave
from bluestem.twin.scan import ScanGeometry
from bluestem.twin.slices import SliceStack
from bluestem.twin.specimen import Specimen
from bluestem.twin.specimens import SPECIMENS, make_specimen
from bluestem.twin.twin import Twin
from bluestem.twin.wavelength import electron_wavelength, interaction_constant

__all__ = [
    "SPECIMENS",
    "DetectorModel",
    "FaultSchedule",
    "Multislice",
    "Optics",
    "PacbedLibrary",
    "ScanGeometry",
    "SimulationGrid",
    "SliceStack",
    "Specimen",
    "Twin",
    "aberration_function",
    "electron_wavelength",
    "interaction_constant",
    "make_specimen",
    "pacbed_library",
    "probe_wave",
]
