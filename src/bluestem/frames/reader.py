"""FrameReader: blocks of frames from a raw-frame file, fast, verified, while it is written.

The uncompressed fast path reads the covering chunks with ``read_direct_chunk`` straight
into one buffer, each chunk placed right after the valid frames of the previous one, so
the frames come out contiguous with a single copy (page cache to buffer); fletcher32 is
checked by a numba kernel, on worker threads while the next chunks are read. Compressed
chunks go through HDF5's filter pipeline, which measured faster here than lz4 blocks plus
a numba bit-unshuffle (docs/live.md).
"""

from __future__ import annotations

import operator
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bluestem.frames._chunks import ChunkGrid
from bluestem.frames._fletcher import fletcher32_u8
from bluestem.frames.layout import FRAMES_PATH, RECEIVED_PATH

__all__ = ["ChecksumError", "FrameReader", "FramesNotWritten"]

_FLETCHER32 = 3  # H5Z_FILTER_FLETCHER32
_BITSHUFFLE = 32008
_BITSHUFFLE_CODECS = {0: "bitshuffle", 2: "bitshuffle-lz4", 3: "bitshuffle-zstd"}


class ChecksumError(OSError):
    """A chunk's stored fletcher32 does not match its bytes: the data are not returned."""

    def __init__(self, path, offset, frames, stored, computed, detail=""):
        self.path, self.offset, self.frames = str(path), tuple(offset), frames
        self.stored, self.computed = stored, computed
        sums = (
            f"stored fletcher32 {stored:#010x}, computed {computed:#010x}"
            if stored is not None and computed is not None
            else detail
        )
        super().__init__(
            f"{self.path}: corrupt chunk at offset {self.offset} "
            f"(frames {frames[0]}..{frames[-1]}): {sums}"
        )


class FramesNotWritten(LookupError):
    """Some requested frames are not on disk yet (their chunk is unwritten).

    ``available`` frames of the request, from ``first``, are readable now;
    ``first_missing`` is the flat index of the first frame that is not.
    """

    def __init__(self, path, first, count, first_missing, offset):
        self.path, self.first, self.count = str(path), first, count
        self.first_missing = first_missing
        self.available = first_missing - first
        super().__init__(
            f"{self.path}: frame {first_missing} is not written yet (chunk at offset "
            f"{tuple(offset)} not on disk); {self.available} of the {count} frames "
            f"requested from {first} are: refresh() and retry"
        )


class FrameReader:
    """Read blocks of frames from a :class:`~bluestem.frames.FrameWriter` file.

    Parameters
    ----------
    path : str or os.PathLike
        The raw-frame file; opened read-only in SWMR mode, so it may still be written.
    verify : bool
        Check every chunk's fletcher32 on the uncompressed path (a mismatch raises
        :class:`ChecksumError`; wrong data are never returned). Compressed chunks are
        always checked, by HDF5's filter pipeline.
    threads : int
        Threads per read, the caller's included: with 2, one more thread verifies
        checksums while the caller reads the next chunks; 1 verifies inline.

    Notes
    -----
    Reads are all or nothing: a request touching a chunk that is not on disk raises
    :class:`FramesNotWritten` (never zeros in its place). A frame that the writer recorded
    as dropped sits in a written chunk as zeros; :meth:`received` says which frames are
    real. One reader serves one thread. HDF5 refuses to open a file in one process both
    with and without SWMR: open other h5py handles on it with ``swmr=True`` too.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True, threads: int = 2):
        import h5py

        threads = operator.index(threads)
        if threads < 1:
            raise ValueError(f"threads={threads} must be >= 1")
        self.path = str(path)
        self.verify = bool(verify)
        self._file = h5py.File(self.path, "r", libver="latest", swmr=True)
        # Chunk bytes are read with os.preadv at the offsets HDF5's chunk index gives:
        # unlike h5py's read_direct_chunk it releases the GIL while it reads, so a live
        # reduction on a thread does not hold up the RunEngine's CA traffic.
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            self._open(threads)
        except BaseException:
            self._file.close()
            os.close(self._fd)
            raise

    def _open(self, threads: int) -> None:
        f = self._file
        if FRAMES_PATH not in f or RECEIVED_PATH not in f:
            raise ValueError(
                f"{self.path} is not a raw-frame file: needs {FRAMES_PATH} and {RECEIVED_PATH}"
            )
        ds = self._ds = f[FRAMES_PATH]
        self._received_ds = f[RECEIVED_PATH]
        if ds.ndim not in (3, 4) or ds.chunks is None:
            raise ValueError(f"{self.path}: {FRAMES_PATH} must be chunked and 3-D or 4-D")
        dcpl = ds.id.get_create_plist()
        self._filters = [dcpl.get_filter(i)[:3] for i in range(dcpl.get_nfilters())]
        ids = [fid for fid, _, _ in self._filters]
        if self.verify and _FLETCHER32 not in ids:
            raise ValueError(f"{self.path} has no fletcher32 filter: open with verify=False")
        self._grid = ChunkGrid(self.scan_shape, self.frame_shape, ds.dtype, ds.chunks[-3])
        self._direct = ids in ([_FLETCHER32], []) and tuple(ds.chunks) == self._grid.chunk_shape
        self._fletcher_bit = 1 << ids.index(_FLETCHER32) if _FLETCHER32 in ids else 0
        self._frame_nbytes = self._grid.chunk_nbytes // self._grid.chunk_frames
        self._pool = ThreadPoolExecutor(threads - 1, "FrameReader") if threads > 1 else None
        if self.compression is not None:
            import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)
        elif self.verify:
            fletcher32_u8(np.zeros(2, dtype=np.uint8))  # compile/load now, not mid-scan

    # -- geometry ----------------------------------------------------------------------

    @property
    def scan_shape(self) -> tuple[int, ...]:
        """``(ny, nx)`` of a scan or ``(n,)`` of a series."""
        return tuple(self._ds.shape[:-2])

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(ky, kx)`` of one frame."""
        return tuple(self._ds.shape[-2:])

    @property
    def dtype(self) -> np.dtype:
        """Pixel dtype."""
        return self._ds.dtype

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        """HDF5 chunk shape: ``(1, b, ky, kx)`` (scan) or ``(b, ky, kx)`` (series)."""
        return tuple(self._ds.chunks)

    @property
    def compression(self) -> str | None:
        """None or the compression filter, e.g. ``"bitshuffle-lz4"``."""
        for fid, _, values in self._filters:
            if fid == _BITSHUFFLE:
                codec = values[4] if len(values) > 4 else 0
                return _BITSHUFFLE_CODECS.get(codec, f"bitshuffle codec {codec}")
            if fid != _FLETCHER32:
                return f"hdf5 filter {fid}"
        return None

    @property
    def total(self) -> int:
        """Frames in the file (written or not)."""
        return self._grid.total

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return not self._file.id.valid

    # -- reading -----------------------------------------------------------------------

    def refresh(self) -> None:
        """See the chunks and received flags the writer has flushed since opening."""
        self._ds.refresh()
        self._received_ds.refresh()

    def read(self, first: int, count: int) -> np.ndarray:
        """Frames ``first .. first+count-1`` (flat, row-major scan indices).

        Returns
        -------
        numpy.ndarray
            ``(count, ky, kx)``, a read-write array of the file's dtype.

        Raises
        ------
        ValueError
            ``first`` or ``count`` outside the scan.
        FramesNotWritten
            A covering chunk is not on disk yet (nothing is returned).
        ChecksumError
            A covering chunk's fletcher32 does not match.
        """
        first, count = self._check_range(first, count)
        chunks = self._covering(first, count)
        if self._direct:
            return self._read_direct(first, count, chunks)
        return self._read_pipeline(first, count, chunks)

    def read_written(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``first .. first+count-1`` and whether each one's chunk is on disk: a
        chunk that is not reads as zeros (``False``). For a file whose writer stopped
        before writing every chunk (a disk that filled, a killed IOC), where
        :meth:`read` would raise :class:`FramesNotWritten` for ever.
        """
        first, count = self._check_range(first, count)
        out = np.zeros((count, *self.frame_shape), dtype=self.dtype)
        written = np.zeros(count, dtype=bool)
        index, left = first, count
        while left > 0:
            n = self._grid.locate(index, left)[2]  # the frames of one chunk
            try:
                out[index - first : index - first + n] = self.read(index, n)
                written[index - first : index - first + n] = True
            except FramesNotWritten:
                pass
            index += n
            left -= n
        return out, written

    def writer_closed(self) -> bool:
        """Whether the writer has closed the file (its superblock no longer says open
        for writing): a chunk not on disk then never will be."""
        from bluestem.frames.repair import read_superblock

        return not read_superblock(self.path).unclosed

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Scan rows ``start .. stop-1`` as ``(stop-start, nx, ky, kx)`` (a series is one
        row)."""
        nrows, nx = self._grid.nrows, self._grid.row_len
        start, stop = operator.index(start), operator.index(stop)
        if not 0 <= start < stop <= nrows:
            raise ValueError(
                f"rows({start}, {stop}) out of range: need 0 <= start < stop <= {nrows}"
            )
        frames = self.read(start * nx, (stop - start) * nx)
        return frames.reshape(stop - start, nx, *self.frame_shape)

    def received(self, first: int, count: int) -> np.ndarray:
        """Whether each of frames ``first .. first+count-1`` was written (bool, (count,))."""
        first, count = self._check_range(first, count)
        nx = self._grid.row_len
        if self._grid.series:
            return self._received_ds[first : first + count] != 0
        y0, y1 = first // nx, (first + count - 1) // nx + 1
        flat = self._received_ds[y0:y1].reshape(-1)
        return flat[first - y0 * nx : first - y0 * nx + count] != 0

    # -- internals ---------------------------------------------------------------------

    def _check_range(self, first, count) -> tuple[int, int]:
        first, count = operator.index(first), operator.index(count)
        total = self._grid.total
        if not 0 <= first < total:
            raise ValueError(f"first={first} out of range: allowed 0..{total - 1}")
        if count < 1:
            raise ValueError(f"count={count} must be >= 1")
        if first + count > total:
            raise ValueError(
                f"count={count} from first={first} runs past the {total} frames of "
                f"{self.path}: allowed 1..{total - first}"
            )
        return first, count

    def _covering(self, first: int, count: int) -> list:
        # (key, offset, filter_mask) of every chunk the request touches, all checked to
        # be on disk before any byte is read: a request is all or nothing.
        grid, dsid = self._grid, self._ds.id
        chunks = []
        index, left = first, count
        while left > 0:
            key, _, n = grid.locate(index, left)
            offset = grid.offset(key)
            info = dsid.get_chunk_info_by_coord(offset)
            if info.byte_offset is None:
                raise FramesNotWritten(self.path, first, count, index, offset)
            chunks.append((key, offset, info.filter_mask, info.byte_offset, info.size))
            index += n
            left -= n
        return chunks

    def _read_direct(self, first: int, count: int, chunks: list) -> np.ndarray:
        grid, fb = self._grid, self._frame_nbytes
        body_nbytes = grid.chunk_nbytes
        lead = grid.locate(first, 1)[1] * fb
        valid = [grid.valid(key) for key, *_ in chunks]
        # Each chunk lands right after the previous chunk's valid frames, overwriting
        # its padding and checksum; so those are taken before the next read.
        buf = np.empty(sum(valid[:-1]) * fb + body_nbytes + 4, dtype=np.uint8)
        jobs = []
        place = 0
        for (key, offset, mask, at, size), nvalid in zip(chunks, valid, strict=True):
            summed = bool(self._fletcher_bit) and not mask & self._fletcher_bit
            if self.verify and not summed:
                self._fail(key, offset, None, None, f"stored without checksum (mask {mask:#x})")
            expected = body_nbytes + 4 * summed
            if size != expected:
                self._fail(key, offset, None, None, f"{size} bytes, expected {expected}")
            got = os.preadv(self._fd, [buf[place : place + size]], at)
            if got != size:
                self._fail(key, offset, None, None, f"read {got} of its {size} bytes")
            if self.verify:
                stored = int.from_bytes(buf[place + body_nbytes : place + expected], "little")
                body = buf[place : place + body_nbytes]
                if nvalid < grid.chunk_frames or self._pool is None:
                    self._compare(key, offset, stored, fletcher32_u8(body))
                else:
                    jobs.append((key, offset, stored, self._pool.submit(fletcher32_u8, body)))
            place += nvalid * fb
        for key, offset, stored, job in jobs:
            self._compare(key, offset, stored, job.result())
        frames = buf[lead : lead + count * fb]
        if 2 * frames.nbytes < buf.nbytes:
            frames = frames.copy()  # do not pin a mostly unused buffer
        return frames.view(self.dtype).reshape(count, *self.frame_shape)

    def _read_pipeline(self, first: int, count: int, chunks: list) -> np.ndarray:
        grid = self._grid
        out = np.empty((count, *self.frame_shape), dtype=self.dtype)
        done = 0
        try:
            while done < count:
                row, col = divmod(first + done, grid.row_len)
                n = min(count - done, grid.row_len - col)
                sel = np.s_[col : col + n] if grid.series else np.s_[row, col : col + n]
                self._ds.read_direct(out, source_sel=sel, dest_sel=np.s_[done : done + n])
                done += n
        except OSError as exc:
            # The pipeline says only "filter returned failure": find the chunk and name
            # both checksums from its raw bytes.
            for key, offset, mask, *_ in chunks:
                if not mask & self._fletcher_bit:
                    _, raw = self._ds.id.read_direct_chunk(offset)
                    data = np.frombuffer(raw, dtype=np.uint8)
                    stored = int.from_bytes(raw[-4:], "little")
                    self._compare(key, offset, stored, fletcher32_u8(data[:-4]))
            span = f"{first}..{first + count - 1}"
            raise OSError(f"{self.path}: reading frames {span}: {exc}") from exc
        return out

    def _compare(self, key, offset, stored: int, computed: int) -> None:
        if int(computed) != stored:
            self._fail(key, offset, stored, int(computed))

    def _fail(self, key, offset, stored, computed, detail="") -> None:
        frames = list(self._grid.frames_of(key))
        raise ChecksumError(self.path, offset, frames, stored, computed, detail)

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the file and the checksum threads (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._file.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.scan_shape} x {self.frame_shape}"
        return f"FrameReader({self.path!r}, {state}, {self.dtype}, {self.compression})"
