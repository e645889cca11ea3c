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
