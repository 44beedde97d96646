"""The scan generator's and detector's limits, checked by the IOC and by the plans alike.

The plans check arguments before anything moves (a clear error at the console); the IOC
checks every put (a clear error for any CA client). Both read these numbers.
"""

from __future__ import annotations

__all__ = ["DWELL_MAX", "EXPOSURE_MAX", "SCAN_SHAPE_MAX"]

#: Scan positions per axis (``SCAN:ShapeX``/``ShapeY``): 1 .. 4096.
SCAN_SHAPE_MAX = 4096
#: Dwell per scan position in s (``SCAN:Dwell``): 0 < dwell <= 1.
DWELL_MAX = 1.0
#: Exposure per internally triggered frame in s (``DET:cam1:AcquireTime``): 0 < t <= 10.
EXPOSURE_MAX = 10.0
