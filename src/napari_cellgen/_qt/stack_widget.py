"""The "EM stack" dock widget: open stacks, see their size and pixel size, set contrast."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..io.display import describe, percentile_limits

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-cellgen"
_FIELDS = (("shape", "Shape"), ("dtype", "Data type"), ("pixel_size", "Pixel size"), ("memory", "Memory"))


class EMStackWidget(QWidget):
    """Open EM stacks with the napari-cellgen reader and inspect the selected image layer."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer

        self.open_file_btn = QPushButton("Open file…")
        self.open_file_btn.setToolTip("Open a TIFF stack (multi-page, BigTIFF, OME or ImageJ)")
        self.open_folder_btn = QPushButton("Open folder…")
        self.open_folder_btn.setToolTip("Open a folder of numbered .tif/.png slices as one stack")
        self.open_file_btn.clicked.connect(self._choose_file)
        self.open_folder_btn.clicked.connect(self._choose_folder)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_file_btn)
        buttons.addWidget(self.open_folder_btn)

        self.layer_label = QLabel()
        self.layer_label.setWordWrap(True)
        self.info_labels: dict[str, QLabel] = {}
        form = QFormLayout()
        for key, title in _FIELDS:
            label = QLabel("–")
            label.setWordWrap(True)
            self.info_labels[key] = label
            form.addRow(f"{title}:", label)

        self.low = _spin(1.0, "Pixels darker than this percentile are shown black")
        self.high = _spin(99.5, "Pixels brighter than this percentile are shown white")
        self.apply_btn = QPushButton("Apply")
        self.apply_btn.setToolTip("Set the contrast limits from these percentiles of a few sampled slices")
        self.apply_btn.clicked.connect(self.apply_percentiles)
        contrast = QGroupBox("Contrast (percentiles)")
        row = QHBoxLayout(contrast)
        row.addWidget(QLabel("low"))
        row.addWidget(self.low)
        row.addWidget(QLabel("high"))
        row.addWidget(self.high)
        row.addWidget(self.apply_btn)

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.layer_label)
        layout.addLayout(form)
        layout.addWidget(contrast)
        layout.addStretch(1)

        viewer.layers.selection.events.active.connect(self._refresh)
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self.destroyed.connect(self._disconnect)
        self._refresh()

    # opening -------------------------------------------------------------------
    def _choose_file(self):
        path, _ = QFileDialog.getOpenFileName(
            self, "Open EM stack", "", "TIFF stacks (*.tif *.tiff *.TIF *.TIFF);;All files (*)"
        )
        if path:
            self.open_path(path)

    def _choose_folder(self):
        path = QFileDialog.getExistingDirectory(self, "Open a folder of numbered slices")
        if path:
            self.open_path(path)

    def open_path(self, path: str) -> list:
        """Open ``path`` with the napari-cellgen reader; errors become notifications."""
        from napari.utils.notifications import show_error

        try:
            layers = self.viewer.open(path, plugin=PLUGIN)
        except Exception as exc:  # napari wraps reader errors; show the reason, not a traceback
            cause = exc.__cause__ or exc
            show_error(f"Could not open {path}: {cause}")
            return []
        if layers:
            self.viewer.layers.selection.active = layers[0]
        return layers

    # inspecting ----------------------------------------------------------------
    def image_layer(self):
        """The active layer if it is an image, else the topmost image layer (or None)."""
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        return images[-1] if images else None

    def _refresh(self, event=None):
        layer = self.image_layer()
        self.apply_btn.setEnabled(layer is not None and not layer.rgb)
        if layer is None:
            self.layer_label.setText("No image layer: open a stack or select an image layer.")
            for label in self.info_labels.values():
                label.setText("–")
            return
        data = layer.data[0] if layer.multiscale else layer.data
        info = describe(data, layer.metadata, layer.scale)
        self.layer_label.setText(f"<b>{layer.name}</b>")
        for key, label in self.info_labels.items():
            label.setText(info[key])

    def _current_plane(self, layer, data) -> int:
        lead = tuple(data.shape[:-2])
        if not lead:
            return 0
        pos = np.asarray(layer.world_to_data(self.viewer.dims.point))[: len(lead)]
        idx = np.clip(np.round(pos).astype(int), 0, np.asarray(lead) - 1)
        return int(np.ravel_multi_index(tuple(idx), lead))

    def apply_percentiles(self) -> tuple[float, float] | None:
        """Set the image's contrast limits to the chosen percentiles (subsampled, lazy-safe)."""
        from napari.utils.notifications import show_warning

        layer = self.image_layer()
        if layer is None or layer.rgb:
            return None
        low, high = self.low.value(), self.high.value()
        if low >= high:
            show_warning("The low percentile must be below the high one.")
            return None
        data = layer.data[-1] if layer.multiscale else layer.data  # the smallest level is enough
        limits = percentile_limits(data, low, high, include=[self._current_plane(layer, data)])
        lo, hi = layer.contrast_limits_range
        layer.contrast_limits_range = (min(lo, limits[0]), max(hi, limits[1]))
        layer.contrast_limits = limits
        return limits

    def _disconnect(self, *args):
        for emitter in (
            self.viewer.layers.selection.events.active,
            self.viewer.layers.events.inserted,
            self.viewer.layers.events.removed,
        ):
            emitter.disconnect(self._refresh)


def _spin(value: float, tip: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(0.0, 100.0)
    spin.setDecimals(2)
    spin.setSingleStep(0.5)
    spin.setSuffix(" %")
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin
