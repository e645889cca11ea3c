"""The docks' layer helpers that need no viewer (napari_cellgen._qt._layers)."""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from napari_cellgen._qt._layers import edited_slices


def test_edited_slices_from_paint_events():
    Atom = namedtuple("Atom", "slice_key mask old_values new_value")  # napari's masked paint atom
    atoms = [Atom((slice(3, 5), slice(0, 9), slice(0, 9)), None, None, 1),
             ((np.array([7, 7, 9]), np.array([1, 2, 3]), np.array([1, 2, 3])), np.zeros(3), 2)]
    assert edited_slices(atoms) == {3, 4, 7, 9}
    assert edited_slices(None) == set()
