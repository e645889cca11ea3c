import numpy as np

from napari_cellgen._progress import run
from napari_cellgen.train import data as train_data
from napari_cellgen.train.loop import TrainConfig, train_segmenter
from napari_cellgen.train.pool import TrainingPool

TINY = dict(scale=1.0, context=0, base=4, depth=2, patch=32, batch=4, val_every=100, steps=5)


def _pair(n=1, size=48, value=200):
    img = np.full((n, size, size), 20, np.uint8)
    img[:, 10:30, 10:30] = value
    mask = np.zeros_like(img)
    mask[:, 10:30, 10:30] = 1
    return img, mask


def test_pool_collects_pairs_and_notifies():
    pool = TrainingPool()
    calls = []
    pool.connect(lambda: calls.append(len(pool)))
    assert pool.arrays() is None
    pool.add(*_pair(3, 64), source="a")
    pool.add(*_pair(2, 48), source="b")
    images, masks = pool.arrays()
    assert images.shape == masks.shape == (5, 48, 48)  # cropped to the smallest size
    assert calls == [3, 5]
    pool.clear()
    assert len(pool) == 0 and calls[-1] == 0


def test_mixing_ratio_respected_by_the_sampler(tmp_path, monkeypatch):
    drawn = {"real": 0, "synthetic": 0}
    original = train_data.PatchSampler.sample

    def counting(self, batch):
        kind = "synthetic" if self.regions[0].planes.shape[-1] == 40 else "real"
        drawn[kind] += batch
        return original(self, batch)

    monkeypatch.setattr(train_data.PatchSampler, "sample", counting)
    real = _pair(2, 48)
    synthetic = _pair(6, 40)
    cfg = TrainConfig(**TINY, synthetic_ratio=0.25, val_fraction=0.0)
    run(train_segmenter([(real[0], real[1], None)], tmp_path / "m", cfg, synthetic=synthetic))
    assert drawn == {"real": 5 * 3, "synthetic": 5 * 1}
