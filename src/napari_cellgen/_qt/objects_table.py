"""A sortable table of the objects of a Labels layer; clicking a row jumps to the object.

The table follows the layer: painting marks its measurements stale and re-measures them shortly
after the last stroke (in a thread), "Re-measure" does it at once (and measures a layer that has
none yet), and "Export CSV" writes the values the table shows, measured after the last edit.
"""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
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


_INT_COLUMNS = {"label", "z_start", "z_end", "area_px", "volume_px"}
REMEASURE_MS = 800  # re-measure this long after the last paint stroke


class ObjectsTable(QWidget):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._watched = None
        self._stale = False  # painted since the shown measurements
        self._edits = 0  # paint strokes seen on the watched layer (a measurement started before one is stale)
        self._job = None  # the running measurement (a _workers.Job)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REMEASURE_MS)
        self._timer.timeout.connect(self.remeasure)
        self.layer_box = QComboBox()
        self.layer_box.setMinimumContentsLength(22)
        self.layer_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.refresh_btn = QPushButton("Re-measure")
        self.refresh_btn.setToolTip("Measure the objects of this layer again (after painting it happens by itself)")
        self.export_btn = QPushButton("Export CSV…")
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
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
        lay.addWidget(self.hint)
        lay.addWidget(self.table)
        self.refresh_btn.clicked.connect(lambda: self.remeasure())
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
        old = self._watched
        if old is layer:
            return
        if old is not None:
            old.events.features.disconnect(self._on_features)
            old.events.paint.disconnect(self._on_paint)
        self._watched = layer
        self._stale, self._edits = False, 0
        self._timer.stop()
        if layer is not None:
            layer.events.features.connect(self._on_features)
            layer.events.paint.connect(self._on_paint)

    def _on_features(self, event=None):
        self.show_layer()

    def _on_paint(self, event=None):
        """A stroke changed the labels: the values shown are stale until re-measured (debounced)."""
        self._edits += 1
        if len(getattr(self.layer, "features", ())) == 0:
            return  # never measured: the hint offers Re-measure
        self._stale = True
        self._set_hint()
        self._timer.start()

    # -- measuring ---------------------------------------------------------------------
    def _measure_args(self, layer):
        """``(labels, intensity image or None, pixel size in nm or None)`` for ``layer``."""
        from ._layers import layer_array, pixel_size_of

        labels = layer_array(layer)
        src = layer.name.split(" mitochondria")[0]
        same = [ly for ly in self._viewer.layers if isinstance(ly, napari.layers.Image)
                and not getattr(ly, "rgb", False) and tuple(layer_array(ly).shape) == tuple(labels.shape)]
        image = next((ly for ly in same if ly.name == src), same[0] if same else None)
        return labels, (layer_array(image) if image is not None else None), pixel_size_of(layer)

    def remeasure(self, sync: bool = False):
        """Measure the current layer again (in a thread unless ``sync``); the table follows."""
        from .._progress import run
        from ..segment.measure import measure_iter
        from ._workers import Job

        layer = self.layer
        self._timer.stop()
        if layer is None:
            return
        if self._job is not None and not sync:  # one at a time: the stroke count tells whether to run again
            self._timer.start()
            return
        # sync (export): measure now even if a thread is still finishing; its result, if older, is dropped
        args, edits = self._measure_args(layer), self._edits
        if sync:
            return self._apply(layer, edits, run(measure_iter(*args)))
        self.hint.setText(f"measuring the objects of {layer.name!r}…")
        self._job = Job(measure_iter, *args, on_done=lambda table: self._apply(layer, edits, table),
                        on_error=lambda exc: self.hint.setText(f"measuring failed: {exc}"), on_end=self._measured)

    def _measured(self, state=None):
        self._job = None

    def _apply(self, layer, edits: int, table: dict):
        if layer is not self.layer:
            return
        if edits != self._edits:  # painted while measuring: these values are already old
            self._timer.start()
            return
        self._stale = False
        from ._layers import features_from

        layer.features = features_from(table)  # -> show_layer (features event)

    def show_layer(self):
        layer = self.layer
        self._watch(layer)
        self.table.setSortingEnabled(False)
        self.table.clear()
        feats = getattr(layer, "features", None)
        self._set_hint()
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

    def _set_hint(self):
        layer = self.layer
        if layer is None:
            text = "No Labels layer: segment an image (Segment dock) or open labels."
        elif len(getattr(layer, "features", ())) == 0:
            text = f"{layer.name!r} has no measurements yet: press Re-measure to measure its objects."
        elif self._stale:
            text = f"{layer.name!r} was painted: re-measuring…"
        else:
            text = f"{len(layer.features)} objects"
        self.hint.setText(text)

    def shown_table(self) -> dict:
        """The columns the table shows, as its rows read (what Export CSV writes)."""
        cols = [self.table.horizontalHeaderItem(j).text() for j in range(self.table.columnCount())]
        out = {}
        for j, c in enumerate(cols):
            vals = [self.table.item(i, j).data(Qt.ItemDataRole.UserRole) for i in range(self.table.rowCount())]
            out[c] = np.array(vals, np.int64 if c in _INT_COLUMNS else np.float64)
        return out

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
        """Write the table as shown, re-measured first if the layer was painted since."""
        from ..segment.measure import write_csv

        if self._stale or self._timer.isActive():
            self.remeasure(sync=True)
        write_csv(path, self.shown_table())

    def _export_dialog(self):
        from napari.utils.notifications import show_error, show_info

        if self.layer is None or len(self.layer.features) == 0:
            show_error("No measured objects to export: press Re-measure (or segment an image) first.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export objects", f"{self.layer.name}.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except OSError as exc:
                show_error(f"Could not write {path}: {exc}")
                return
            show_info(f"Wrote {self.table.rowCount()} objects to {path}")
