"""Mask layouts: fitted statistics -> new masks like the real ones, not copies of them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _generate_helpers import disks

from napari_cellgen.generate.layout import fit_layout, object_stats, sample_layouts


def test_fit_and_sample_layouts_match_statistics():
    _, masks = disks(z=6, size=300, per_slice=6, radius=(10, 16))
    layout = fit_layout(masks, tile=256)
    json.dumps(layout)  # JSON-able: it ships as layout.json
    assert layout["n_objects"] > 10
    new = sample_layouts(layout, 40, (256, 256), seed=3)
    assert new.shape == (40, 256, 256) and new.dtype == np.uint16
    real = object_stats(masks[:, :256, :256])
    gen = object_stats(new)
    assert gen["area"]["mean"] == pytest.approx(real["area"]["mean"], rel=0.5)
    assert gen["count"]["mean"] == pytest.approx(real["count"]["mean"], rel=0.6)
    # generated, not copied: no generated mask equals a real crop
    for m in new[:10]:
        assert not any(np.array_equal(m != 0, masks[z, :256, :256] != 0) for z in range(len(masks)))


def test_sample_layouts_is_seeded():
    _, masks = disks(z=3, size=256, per_slice=4)
    layout = fit_layout(masks)
    a = sample_layouts(layout, 5, (64, 64), seed=1)
    b = sample_layouts(layout, 5, (64, 64), seed=1)
    c = sample_layouts(layout, 5, (64, 64), seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_layout_only_reads_given_slices():
    _, masks = disks(z=4, size=128, per_slice=3, radius=(4, 6))
    big = masks.copy()
    yy, xx = np.mgrid[:128, :128]
    big[2] = (yy - 64) ** 2 + (xx - 64) ** 2 <= 40**2  # one huge object only on slice 2
    layout = fit_layout(big, slices=[0, 1])
    assert max(np.exp(r[0]) for r in layout["objects"]) < 20


def test_empty_layout_cannot_sample():
    layout = fit_layout(np.zeros((2, 64, 64), np.uint8), slices=[0, 1])
    with pytest.raises(ValueError, match="no object statistics"):
        sample_layouts(layout, 1)
