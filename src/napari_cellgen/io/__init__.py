"""Reading and writing EM stacks. No Qt and no napari: the CLI and training use it too.

Public API::

    from napari_cellgen.io import read_stack, write_tiff, ReadError

    data, meta = read_stack("stack.tif")      # or a folder of numbered slices
    meta["scale"], meta["pixel_size_nm"]       # nm per pixel when the file says so
    write_tiff("mask.tif", labels, meta["pixel_size_nm"], labels=True)
"""

from ._lazy import LazyStack, to_gray
from .display import describe, percentile_limits
from .stack import default_memory_limit, detect, read_folder, read_stack
from .tiff import ReadError, is_tiff, read_tiff
from .tiff_write import write_tiff

__all__ = [
    "LazyStack",
    "ReadError",
    "default_memory_limit",
    "describe",
    "detect",
    "is_tiff",
    "percentile_limits",
    "read_folder",
    "read_stack",
    "read_tiff",
    "to_gray",
    "write_tiff",
]
