"""A minimal initramfs writer: a gzip-compressed cpio archive in the ``newc`` format.

The kernel unpacks ``newc`` archives into its root tmpfs before running ``/init``
(Documentation/driver-api/early-userspace/buffer-format.rst). Writing the archive
here keeps the testbed free of a ``cpio`` binary and makes it reproducible: entries
are sorted and carry a fixed mtime.
"""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

_TRAILER = "TRAILER!!!"


def _entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    """One ``newc`` header, the NUL-terminated name and the data, each padded to 4 bytes."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + encoded
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def build(root: Path, dest: Path) -> int:
    """Archive the tree under ``root`` (files, directories, symlinks) into ``dest``.

    Returns the size of the compressed archive in bytes.
    """
    parts = []
    paths = sorted(p for p in root.rglob("*"))
    for ino, path in enumerate(paths, start=1):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            parts.append(_entry(rel, stat.S_IFLNK | 0o777, os.readlink(path).encode(), ino))
        elif stat.S_ISDIR(st.st_mode):
            parts.append(_entry(rel, stat.S_IFDIR | 0o755, b"", ino))
        elif stat.S_ISREG(st.st_mode):
            perm = 0o755 if st.st_mode & 0o111 else 0o644
            parts.append(_entry(rel, stat.S_IFREG | perm, path.read_bytes(), ino))
    parts.append(_entry(_TRAILER, 0, b"", 0))
    blob = b"".join(parts)
    with gzip.GzipFile(dest, "wb", compresslevel=1, mtime=0) as f:
        f.write(blob)
    return dest.stat().st_size
