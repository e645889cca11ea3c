import numpy as np

from napari_cellgen.segment.measure import measure


def test_table_lists_objects_sorts_and_jumps(make_napari_viewer, tmp_path):
    from napari_cellgen._qt.objects_table import ObjectsTable

    lab = np.zeros((5, 60, 80), np.uint32)
    lab[0:2, 5:15, 5:15] = 1  # 200 voxels
    lab[3:5, 40:55, 50:75] = 2  # 750 voxels
    t = measure(lab)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(lab, name="mito", features={"index": t["label"], **t})
    w = ObjectsTable(viewer)
    viewer.window.add_dock_widget(w)
    assert w.layer_box.currentText() == "mito"
    assert w.table.rowCount() == 2
    headers = [w.table.horizontalHeaderItem(j).text() for j in range(w.table.columnCount())]
    vcol = headers.index("volume_px")
    w.table.sortItems(vcol, order=w.table.horizontalHeader().sortIndicatorOrder().DescendingOrder)
    assert w.table.item(0, headers.index("label")).text() == "2"
    w.go_to_row(0)
    assert layer.selected_label == 2
    assert viewer.dims.current_step[0] == 4  # centroid z of object 2 is 3.5 -> rounds to 4
    np.testing.assert_allclose(viewer.camera.center[-2:], (47.0, 62.0))
    # features replaced (e.g. after re-segmenting) refresh the table
    layer.features = {"index": [1], **{k: v[:1] for k, v in t.items()}}
    assert w.table.rowCount() == 1
    w.export_csv(tmp_path / "objects.csv")
    assert (tmp_path / "objects.csv").read_text().startswith("label,")


def _table_value(w, label: int, column: str) -> float:
    from qtpy.QtCore import Qt

    headers = [w.table.horizontalHeaderItem(j).text() for j in range(w.table.columnCount())]
    for i in range(w.table.rowCount()):
        if int(w.table.item(i, headers.index("label")).data(Qt.ItemDataRole.UserRole)) == label:
            return float(w.table.item(i, headers.index(column)).data(Qt.ItemDataRole.UserRole))
    raise KeyError(label)


def _csv_value(path, label: int, column: str) -> float:
    import csv

    with open(path) as f:
        rows = list(csv.DictReader(f))
    return float(next(r for r in rows if int(float(r["label"])) == label)[column])


def test_painting_re_measures_and_export_writes_what_is_shown(make_napari_viewer, qtbot, tmp_path):
    """Issue 14: a label measured 12,304 voxels had 17,473 after painting; Refresh/Export kept the old value."""
    from napari_cellgen._qt.objects_table import ObjectsTable

    lab = np.zeros((5, 60, 80), np.uint32)
    lab[0:2, 5:15, 5:15] = 1
    lab[3:5, 40:55, 50:75] = 2
    t = measure(lab)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(lab, name="mito", features={"index": t["label"], **t})
    w = ObjectsTable(viewer)
    viewer.window.add_dock_widget(w)
    assert _table_value(w, 1, "volume_px") == 200

    # the user paints object 1 bigger, as the brush does (through the undo history, emitting paint)
    zz, yy, xx = np.nonzero(np.ones((1, 10, 20), bool))
    layer.data_setitem((zz + 2, yy + 5, xx + 5), 1)
    truth = int((layer.data == 1).sum())
    assert truth == 400
    qtbot.waitUntil(lambda: _table_value(w, 1, "volume_px") == truth, timeout=15000)
    assert _table_value(w, 2, "volume_px") == 750
    assert "objects" in w.hint.text()

    # painted and exported at once (before the debounced re-measure): the CSV still has today's values
    layer.data_setitem((zz + 4, yy + 5, xx + 5), 1)
    w.export_csv(tmp_path / "objects.csv")
    truth = int((layer.data == 1).sum())
    assert _csv_value(tmp_path / "objects.csv", 1, "volume_px") == truth == _table_value(w, 1, "volume_px")

    # painted again while a measuring thread is still finishing (it once bailed out and exported old values)
    layer.data_setitem((zz + 1, yy + 5, xx + 5), 1)
    w._job = object()  # a measurement in flight
    w.export_csv(tmp_path / "objects2.csv")
    w._job = None
    truth = int((layer.data == 1).sum())
    assert truth == 700
    assert _csv_value(tmp_path / "objects2.csv", 1, "volume_px") == truth == _table_value(w, 1, "volume_px")


def test_unmeasured_layer_says_how_to_measure_it(make_napari_viewer, qtbot):
    from napari_cellgen._qt.objects_table import ObjectsTable

    lab = np.zeros((40, 50), np.uint32)
    lab[5:15, 5:25] = 3
    viewer = make_napari_viewer()
    viewer.add_labels(lab, name="drawn")
    w = ObjectsTable(viewer)
    viewer.window.add_dock_widget(w)
    assert w.table.rowCount() == 0 and "no measurements" in w.hint.text() and "Re-measure" in w.hint.text()
    w.refresh_btn.click()
    qtbot.waitUntil(lambda: w.table.rowCount() == 1, timeout=15000)
    assert _table_value(w, 3, "area_px") == 200
