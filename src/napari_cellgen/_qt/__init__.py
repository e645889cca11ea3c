"""Dock widgets: the only part of napari-cellgen that imports Qt (through qtpy) and napari.qt.

Each widget is thin: it reads the viewer, calls the core (``napari_cellgen.io``,
``segment``, ``train``...) and shows the result.
"""
