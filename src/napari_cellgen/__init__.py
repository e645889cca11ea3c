"""napari-cellgen: mitochondria segmentation and EM generation for napari.

Importing the package is cheap: it imports neither Qt nor torch.
"""

try:
    from importlib.metadata import version as _version

    __version__ = _version("napari-cellgen")
except Exception:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
