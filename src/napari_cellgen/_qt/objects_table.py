"""A sortable table of the objects of a Labels layer; clicking a row jumps to the object."""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

SHOWN = ["label", "z_start", "z_end", "area_px", "volume_px", "area_nm2", "volume_nm3", "centroid_z",
         "centroid_y", "centroid_x", "equivalent_diameter_px", "axis_major_length", "axis_minor_length",
         "eccentricity", "solidity", "orientation", "intensity_mean"]


class _NumItem(QTableWidgetItem):
    def __lt__(self, other):
        try:
            return float(self.data(Qt.ItemDataRole.UserRole)) < float(other.data(Qt.ItemDataRole.UserRole))
        except (TypeError, ValueError):
            return super().__lt__(other)


class ObjectsTable(QWidget):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self.layer_box = QComboBox()
        self.refresh_btn = QPushButton("Refresh")
        self.export_btn = QPushButton("Export CSV…")
        self.table = QTableWidget()
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        top = QHBoxLayout()
        top.addWidget(self.layer_box, 1)
        top.addWidget(self.refresh_btn)
        top.addWidget(self.export_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.table)
        self.refresh_btn.clicked.connect(self.refresh)
        self.export_btn.clicked.connect(self._export_dialog)
        self.layer_box.currentTextChanged.connect(lambda _: self.show_layer())
        self.table.cellClicked.connect(self.go_to_row)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def _labels_layers(self):
        import napari

        return [ly for ly in self._viewer.layers if isinstance(ly, napari.layers.Labels)]

    def refresh(self, event=None):
        current = self.layer_box.currentText()
        names = [ly.name for ly in self._labels_layers()]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if event is not None and getattr(event, "type", "") == "inserted" and names:
            current = getattr(event, "value", None).name if hasattr(event, "value") else current
        if current in names:
            self.layer_box.setCurrentText(current)
        self.layer_box.blockSignals(False)
        self.show_layer()

    @property
    def layer(self):
        name = self.layer_box.currentText()
        return self._viewer.layers[name] if name in self._viewer.layers else None  # noqa: SIM401 (LayerList has no .get)

    def _watch(self, layer):
        old = getattr(self, "_watched", None)
        if old is layer:
            return
        if old is not None:
            old.events.features.disconnect(self._on_features)
        self._watched = layer
        if layer is not None:
            layer.events.features.connect(self._on_features)

    def _on_features(self, event=None):
        self.show_layer()

    def show_layer(self):
        layer = self.layer
        self._watch(layer)
        self.table.setSortingEnabled(False)
        self.table.clear()
        feats = getattr(layer, "features", None)
        if layer is None or feats is None or len(feats) == 0:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            return
        cols = [c for c in SHOWN if c in feats.columns] + [
            c for c in feats.columns if c.endswith(("_nm", "_nm2", "_nm3")) and c not in SHOWN
        ]
        self.table.setColumnCount(len(cols))
        self.table.setRowCount(len(feats))
        self.table.setHorizontalHeaderLabels(cols)
        for j, c in enumerate(cols):
            vals = feats[c].to_numpy()
            for i, v in enumerate(vals):
                text = f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)
                item = _NumItem(text)
                item.setData(Qt.ItemDataRole.UserRole, float(v))
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)

    def go_to_row(self, row: int, col: int = 0):
        """Move the viewer to the object in ``row`` and select its label."""
        layer = self.layer
        headers = [self.table.horizontalHeaderItem(j).text() for j in range(self.table.columnCount())]
        if layer is None or "label" not in headers:
            return
        label = int(float(self.table.item(row, headers.index("label")).data(Qt.ItemDataRole.UserRole)))
        feats = layer.features
        rec = feats[feats["label"] == label].iloc[0]
        layer.selected_label = label
        scale = np.asarray(layer.scale)
        if layer.ndim == 3:
            z = int(round(rec["centroid_z"]))
            step = list(self._viewer.dims.current_step)
            step[-3] = z
            self._viewer.dims.current_step = tuple(step)
            center = (z * scale[-3], rec["centroid_y"] * scale[-2], rec["centroid_x"] * scale[-1])
        else:
            center = (rec["centroid_y"] * scale[-2], rec["centroid_x"] * scale[-1])
        self._viewer.camera.center = center[-2:] if self._viewer.dims.ndisplay == 2 else center
        self._viewer.layers.selection.active = layer

    def export_csv(self, path) -> None:
        from ..segment.measure import write_csv

        feats = self.layer.features
        write_csv(path, {c: feats[c].to_numpy() for c in feats.columns if c != "index"})

    def _export_dialog(self):
        from napari.utils.notifications import show_error, show_info

        if self.layer is None or len(self.layer.features) == 0:
            show_error("No measured objects to export: segment an image first.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export objects", f"{self.layer.name}.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except OSError as exc:
                show_error(f"Could not write {path}: {exc}")
                return
            show_info(f"Wrote {len(self.layer.features)} objects to {path}")
