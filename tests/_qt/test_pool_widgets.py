import numpy as np


def test_training_pool_appears_in_the_train_dock(make_napari_viewer):
    from napari_cellgen._qt.train_widget import TrainWidget
    from napari_cellgen.train.pool import POOL

    POOL.clear()
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.pool_info.value == "no synthetic pairs"
    assert w._synthetic() is None
    img = np.zeros((3, 32, 32), np.uint8)
    POOL.add(img, img.copy(), source="test")
    try:
        assert w.pool_info.value == "3 synthetic pairs"
        images, masks = w._synthetic()
        assert images.shape == (3, 32, 32)
        w.synthetic_ratio.value = 0.0
        assert w._synthetic() is None  # a share of 0 means real data only
    finally:
        POOL.clear()
