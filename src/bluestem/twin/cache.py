"""A bounded, thread-safe LRU store of noiseless frames and their sampling tables.

Tables live in preallocated slabs so the noise kernel reads them in place (no copy per
block). A block pins the slots it uses; eviction only takes unpinned slots, so a
concurrent block can never overwrite a table another block is still reading.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

__all__ = ["FrameCache"]

#: Bytes per cached pixel: intensity (float64), packed alias table (2 x uint32).
BYTES_PER_PIXEL = 8 + 8


class FrameCache:
    """Slots of ``pixels``-long tables, keyed by int keys, least recently used evicted.

    Parameters
    ----------
    pixels : int
        Pixels per (binned) frame.
    capacity : int
        Number of slots (>= 1).
    """

    def __init__(self, pixels: int, capacity: int) -> None:
        self.capacity = int(capacity)
        # np.empty only reserves address space: untouched slots cost no memory.
        self.intensity = np.empty((self.capacity, pixels))
        self.tables = np.empty((self.capacity, pixels, 2), np.uint32)
        self.totals = np.zeros(self.capacity)
        self._map: OrderedDict[int, int] = OrderedDict()
        self._slot_key: list[int | None] = [None] * self.capacity
        self._pins = np.zeros(self.capacity, np.int64)
        self._free = list(range(self.capacity - 1, -1, -1))
        self._cond = threading.Condition()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._map)

    def acquire(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pin a slot for each of the distinct ``keys``.

        Returns
        -------
        slots : ndarray of int64
            One slot per key.
        missing : ndarray of bool
            Keys whose slot is fresh: the caller fills it, then calls ``publish``.
            Every acquired slot must be given back with ``release``.
        """
        keys = [int(k) for k in keys]
        if len(keys) > self.capacity:
            raise ValueError(f"{len(keys)} keys exceed the cache capacity {self.capacity}")
        with self._cond:
            while True:
                found = [self._map.get(k) for k in keys]
                need = sum(s is None for s in found)
                mapped_unpinned = sum(1 for s in self._map.values() if self._pins[s] == 0) - sum(
                    1 for s in found if s is not None and self._pins[s] == 0
                )
                if need <= len(self._free) + mapped_unpinned:
                    break
                self._cond.wait()
            slots = np.empty(len(keys), np.int64)
            missing = np.zeros(len(keys), bool)
            for i, (key, slot) in enumerate(zip(keys, found, strict=True)):
                if slot is not None:
                    self._pins[slot] += 1
                    self._map.move_to_end(key)
                    slots[i] = slot
            for i, slot in enumerate(found):
                if slot is None:
                    slot = self._take()
                    self._pins[slot] += 1
                    slots[i] = slot
                    missing[i] = True
            self.hits += len(keys) - need
            self.misses += need
        return slots, missing

    def _take(self) -> int:
        if self._free:
            return self._free.pop()
        for key, slot in self._map.items():
            if self._pins[slot] == 0:
                del self._map[key]
                self._slot_key[slot] = None
                return slot
        raise RuntimeError("no free cache slot (acquire checked there was one)")

    def publish(self, keys: np.ndarray, slots: np.ndarray) -> None:
        """Make filled slots findable. A key another thread published first keeps its
        slot; this one is freed on release."""
        with self._cond:
            for key, slot in zip(keys, slots, strict=True):
                key = int(key)
                if key not in self._map:
                    self._map[key] = int(slot)
                    self._slot_key[int(slot)] = key

    def release(self, slots: np.ndarray) -> None:
        """Unpin slots taken by ``acquire``."""
        with self._cond:
            for slot in slots:
                slot = int(slot)
                self._pins[slot] -= 1
                if self._pins[slot] == 0 and self._slot_key[slot] is None:
                    self._free.append(slot)
            self._cond.notify_all()
