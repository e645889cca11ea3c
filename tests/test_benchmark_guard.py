"""Benchmarks refuse to score a model on Lucchi slices its card says it trained on."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _model(tmp_path, spans, data="EPFL/Lucchi training volume"):
    from napari_cellgen.models.store import save_model
    from napari_cellgen.models.unet import UNet

    folder = tmp_path / "m"
    save_model(folder, UNet(1, 1, base=4, depth=1), {"training": {"train_slices_list": spans, "data": data}})
    return folder


def test_a_model_that_trained_on_the_scored_slices_is_refused(tmp_path):
    from _provenance import check_unseen, trained_lucchi_slices

    folder = _model(tmp_path, "0-129")
    assert trained_lucchi_slices(folder) == set(range(130))
    check_unseen(folder, range(130, 165))  # never saw them: fine
    with pytest.raises(SystemExit, match=r"trained on Lucchi slices 120-129 \(10 of them\).*--model"):
        check_unseen(folder, range(120, 140))


def test_other_data_and_unrecorded_slices_are_not_lucchi_slices(tmp_path):
    from _provenance import check_unseen

    check_unseen(_model(tmp_path, "0-164", data="my own volume"), range(165))
    card = json.loads((_model(tmp_path / "b", None).joinpath("card.json")).read_text())
    assert card["training"]["train_slices_list"] is None
    check_unseen(tmp_path / "b" / "m", range(165))
