import numpy as np
import pytest

from napari_cellgen._progress import run
from napari_cellgen.segment.measure import measure, write_csv
from napari_cellgen.segment.postprocess import label_stack, prob_to_mask


def _labels(prob, **kw):
    out = np.zeros(prob.shape, np.uint32)
    n = run(label_stack(prob, out, **kw))
    return out, n


def test_ids_consistent_across_slices():
    prob = np.zeros((4, 20, 20), np.float32)
    prob[0:3, 2:6, 2:6] = 1  # one object through 3 slices
    prob[1:4, 10:15, 10:15] = 1  # another through slices 1-3
    prob[3, 16:18, 2:4] = 1  # a separate object in slice 3 only
    lab, n = _labels(prob)
    assert n == 3
    a = {int(lab[z, 3, 3]) for z in range(3)}
    assert len(a) == 1 and 0 not in a
    b = {int(lab[z, 12, 12]) for z in range(1, 4)}
    assert len(b) == 1 and 0 not in b and a != b
    lab2d, n2 = _labels(prob, mode="2d")
    assert n2 == 3 + 3 + 1  # per-slice objects get their own ids
    assert len({int(lab2d[z, 3, 3]) for z in range(3)}) == 3


def test_u_shaped_object_merges_later():
    # two arms in slice 0 joined in slice 1: one object in 3D
    prob = np.zeros((2, 10, 10), np.uint8)
    prob[0, 1:9, 1] = 255
    prob[0, 1:9, 8] = 255
    prob[1, 1, 1:9] = 255
    lab, n = _labels(prob)
    assert n == 1 and set(np.unique(lab)) == {0, 1}


def test_min_size_and_holes():
    prob = np.zeros((30, 30), np.float32)
    prob[2:12, 2:12] = 0.9
    prob[5:8, 5:8] = 0.1  # a hole: filled
    prob[20:22, 20:22] = 0.9  # 4 px: removed by min_size 5
    lab, n = _labels(prob, min_size=5)
    assert n == 1
    assert lab[6, 6] == 1 and lab[21, 21] == 0
    assert prob_to_mask(prob, 0.5, fill_holes=False)[6, 6] == 0


def test_watershed_splits_touching_discs():
    y, x = np.mgrid[0:60, 0:100]
    m = ((y - 30) ** 2 + (x - 30) ** 2 < 400) | ((y - 30) ** 2 + (x - 66) ** 2 < 400)
    _, n_plain = _labels(m.astype(np.float32))
    _, n_split = _labels(m.astype(np.float32), split=True)
    assert n_plain == 1 and n_split == 2


def test_label_output_dtype_checked():
    with pytest.raises(ValueError, match="32- or 64-bit"):
        run(label_stack(np.zeros((4, 4)), np.zeros((4, 4), np.uint8)))


def test_measurements_against_hand_computed_values(tmp_path):
    lab = np.zeros((3, 40, 50), np.uint32)
    lab[0:2, 10:20, 5:25] = 7  # 2 x 10 x 20 box = 400 voxels
    lab[2, 30:34, 40:42] = 9  # 8 voxels, one slice
    img = np.zeros(lab.shape, np.float32)
    img[lab == 7] = 2.0
    img[lab == 9] = 5.0
    t = measure(lab, img, pixel_size=(10.0, 5.0, 4.0))
    assert list(t["label"]) == [7, 9]
    assert list(t["volume_px"]) == [400, 8]
    assert list(t["z_start"]) == [0, 2] and list(t["z_end"]) == [1, 2]
    np.testing.assert_allclose(t["centroid_z"], [0.5, 2.0])
    np.testing.assert_allclose(t["centroid_y"], [14.5, 31.5])
    np.testing.assert_allclose(t["centroid_x"], [14.5, 40.5])
    np.testing.assert_allclose(t["volume_nm3"], [400 * 200.0, 8 * 200.0])
    np.testing.assert_allclose(t["intensity_mean"], [2.0, 5.0])
    assert list(t["bbox_y0"]) == [10, 30] and list(t["bbox_x1"]) == [25, 42]
    np.testing.assert_allclose(t["equivalent_diameter_px"][0], (6 * 400 / np.pi) ** (1 / 3))
    np.testing.assert_allclose(t["solidity"], [1.0, 1.0])
    # the largest slice of object 7 is a 10 x 20 rectangle: orientation along x
    assert abs(abs(t["orientation"][0]) - np.pi / 2) < 1e-6
    write_csv(tmp_path / "o.csv", t)
    lines = (tmp_path / "o.csv").read_text().splitlines()
    assert lines[0].startswith("label,") and len(lines) == 3


def test_measure_2d_with_pixel_size():
    lab = np.zeros((20, 20), np.uint16)
    lab[2:6, 3:5] = 1
    t = measure(lab, pixel_size=(5.0, 5.0))
    assert t["area_px"][0] == 8 and t["area_nm2"][0] == 200.0
    np.testing.assert_allclose(t["axis_major_length"][0], np.sqrt(16 * ((16 - 1) / 12)), rtol=1e-6)


def test_min_size_counts_each_voxel_once_through_slices():
    # 300 voxels over 3 slices (100 each): dropped at min_size 301, kept at 300
    prob = np.zeros((3, 30, 30), np.float32)
    prob[:, 5:15, 5:15] = 1
    assert _labels(prob, min_size=301)[1] == 0
    assert _labels(prob, min_size=300)[1] == 1
    # a U over 2 slices that merges late: 2 x 8 + 8 = 24 voxels
    u = np.zeros((2, 10, 10), np.float32)
    u[0, 1:9, 1] = u[0, 1:9, 8] = u[1, 1, 1:9] = 1
    assert _labels(u, min_size=24)[1] == 1 and _labels(u, min_size=25)[1] == 0


def test_z_smooth_drops_a_one_slice_flicker_and_bridges_a_one_slice_gap():
    from napari_cellgen.segment.postprocess import smooth_z

    prob = np.full((5, 20, 20), 10, np.uint8)
    prob[:, 2:8, 2:8] = 200  # an object through the stack ...
    prob[2, 2:8, 2:8] = 60  # ... that the network doubted in one slice
    prob[2, 12:18, 12:18] = 200  # and a blob seen in one slice only
    lab, n = _labels(prob)
    assert n == 3 and lab[2, 4, 4] == 0  # the gap splits the object; the blob counts
    lab, n = _labels(prob, z_smooth=True)
    assert n == 1 and lab[2, 4, 4] > 0 and lab[2, 14, 14] == 0
    assert len({int(lab[z, 4, 4]) for z in range(5)}) == 1
    # edge slices repeat themselves: a constant stack is unchanged, in [0, 1]
    np.testing.assert_allclose(smooth_z(np.full((3, 4, 4), 255, np.uint8)), 1.0)
    # a 2D image is never smoothed
    flat = np.zeros((20, 20), np.float32)
    flat[5:10, 5:10] = 0.9
    assert _labels(flat, z_smooth=True)[1] == 1


def test_logit_upsampling_follows_the_zero_crossing():
    from napari_cellgen.segment.predict import upsample_probs

    # two model pixels: confident no (p = 0.01) and a weak yes (p = 0.6). Bilinear probabilities
    # cross 0.5 at 83 % of the way; the logits (-4.6 and +0.4) cross zero at 92 %
    low = np.array([[0.01, 0.6]], np.float32)
    p = upsample_probs(low, (1, 200), "probability")
    lg = upsample_probs(low, (1, 200), "logit")
    assert (lg >= 0.5).sum() < (p >= 0.5).sum()
    assert lg.min() >= 0 and lg.max() <= 1 and lg.dtype == np.float32
    np.testing.assert_allclose(upsample_probs(low, (1, 2), "logit"), low)
    with pytest.raises(ValueError, match="upsample"):
        upsample_probs(low, (1, 4), "nearest")
