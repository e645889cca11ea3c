"""A raw on-disk (Z, Y, X) array read and written slice by slice with pread/pwrite.

Unlike ``np.memmap``, pages touched here do not stay mapped into the process, so
the resident memory of a job streaming through a volume much larger than RAM
stays bounded by the slices it holds (the OS page cache is not counted).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np


class DiskArray:
    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype):
        if len(shape) != 3:
            raise ValueError("DiskArray holds (Z, Y, X) volumes")
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        self._slice_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self._fd, self._slice_bytes * self.shape[0])

    def __len__(self):
        return self.shape[0]

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()

    def _read(self, z: int) -> np.ndarray:
        buf = os.pread(self._fd, self._slice_bytes, z * self._slice_bytes)
        return np.frombuffer(buf, self.dtype).reshape(self.shape[1:]).copy()

    def _zs(self, key):
        if isinstance(key, tuple):
            zkey, rest = key[0], key[1:]
        else:
            zkey, rest = key, ()
        return zkey, rest

    def __getitem__(self, key):
        zkey, rest = self._zs(key)
        if isinstance(zkey, (int, np.integer)):
            z = int(zkey) % self.shape[0]
            return self._read(z)[rest] if rest else self._read(z)
        if zkey is Ellipsis:
            zkey = slice(None)
        zs = range(*zkey.indices(self.shape[0]))
        if not len(zs):
            return np.zeros((0, *self.shape[1:]), self.dtype)[(slice(None), *rest)]
        return np.stack([self._read(z)[rest] if rest else self._read(z) for z in zs])

    def __setitem__(self, key, value):
        zkey, rest = self._zs(key)
        if rest or not isinstance(zkey, (int, np.integer)):
            if zkey is Ellipsis or zkey == slice(None):
                value = np.broadcast_to(np.asarray(value, self.dtype), self.shape)
                for z in range(self.shape[0]):
                    self[z] = value[z]
                return
            raise IndexError("DiskArray writes whole slices: use arr[z] = plane")
        plane = np.ascontiguousarray(np.broadcast_to(np.asarray(value, self.dtype), self.shape[1:]))
        os.pwrite(self._fd, plane.tobytes(), int(zkey) % self.shape[0] * self._slice_bytes)

    def __array__(self, dtype=None, copy=None):
        arr = self[:]
        return arr.astype(dtype) if dtype is not None else arr
