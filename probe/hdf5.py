"""Low-level HDF5 helpers the run file needs and h5py does not offer.

* :func:`lookup3` is Bob Jenkins' ``hashlittle`` as HDF5 uses it for metadata checksums.
* :func:`clear_stale_write_flag` does what ``h5clear -s`` does, for one case only: a file whose
  superblock (version 2 or 3) still says "open for writing" although no process holds it (its
  writer was killed before it switched to SWMR mode, or while it closed). The data are untouched;
  only the consistency-flags byte changes and the superblock checksum is recomputed. A live writer
  holds an HDF5 file lock, so the flags are never cleared under one.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
WRITE_ACCESS = 0x01
SWMR_WRITE_ACCESS = 0x04
_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """HDF5's ``H5_checksum_lookup3`` (Jenkins' lookup3 ``hashlittle``, byte-wise)."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    k = 0
    while length > 12:
        a = (a + int.from_bytes(data[k:k + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[k + 4:k + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[k + 8:k + 12], "little")) & _MASK
        a = (a - c) & _MASK; a ^= _rot(c, 4); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= _rot(a, 6); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 8); b = (b + a) & _MASK  # noqa: E702
        a = (a - c) & _MASK; a ^= _rot(c, 16); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= _rot(a, 19); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 4); b = (b + a) & _MASK  # noqa: E702
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = data[k:k + length] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    c ^= b; c = (c - _rot(b, 14)) & _MASK  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _MASK  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _MASK  # noqa: E702
    return c


def _superblock(head: bytes) -> tuple[int, int] | None:
    """``(size in bytes without the checksum, flags)`` of a version 2/3 superblock at offset 0."""
    if len(head) < 12 or head[:8] != SIGNATURE or head[8] not in (2, 3):
        return None
    size = 12 + 4 * head[9]  # signature, version, sizes, flags, then four addresses
    if len(head) < size + 4:
        return None
    return size, head[11]


def held_by_another_process(path: str | os.PathLike[str]) -> bool:
    """True when some process holds an HDF5 file lock on ``path`` (a live writer or locking reader)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def clear_stale_write_flag(path: str | os.PathLike[str]) -> bool:
    """Clear the "open for writing" flags of a file no process holds; True if they were cleared.

    Refuses (False) when the superblock is not version 2/3, its checksum does not verify (the file
    is damaged, not merely flagged), no flag is set, or another process holds the file.
    """
    path = Path(path)
    if held_by_another_process(path):
        return False
    with open(path, "r+b") as fh:
        head = fh.read(64)
        sb = _superblock(head)
        if sb is None:
            return False
        size, flags = sb
        (stored,) = struct.unpack("<I", head[size:size + 4])
        if lookup3(head[:size]) != stored or not flags & (WRITE_ACCESS | SWMR_WRITE_ACCESS):
            return False
        body = head[:11] + b"\x00" + head[12:size]
        fh.seek(0)
        fh.write(body + struct.pack("<I", lookup3(body)))
        fh.flush()
        os.fsync(fh.fileno())
    return True
