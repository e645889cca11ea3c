"""One vocabulary across the command line, the Python API and the docks; progress on a terminal and in a log.

- every option of every subcommand has help and shows its default;
- ``--model`` / ``--generator`` / ``--batch`` / ``--views`` everywhere, and the former spellings
  (``--init``, ``--batch-size``, ``--tta``) still parse to the same options, hidden from --help;
- ``--tile`` / ``--overlap`` are input pixels like ``--patch``;
- a log file gets a line every 5 %, a terminal one live bar.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest

from napari_cellgen import cli
from napari_cellgen._progress import Progress, tqdm_callback
from napari_cellgen.segment.pipeline import SegmentOptions


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_has_help_and_shows_its_default():
    subs = _subparsers()
    assert set(cli.SUBCOMMANDS) <= set(subs)
    missing = []
    for name, p in subs.items():
        fmt = p._get_formatter()
        for action in p._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
                continue
            text = fmt._get_help_string(action) or ""
            flag = action.option_strings[-1]
            if not text.strip():
                missing.append(f"{name} {flag}: no help")
            elif action.nargs != 0 and not action.required and "default" not in text:
                missing.append(f"{name} {flag}: no default shown")
    assert not missing, missing


def test_info_lists_generators_and_models(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "segmentation models:" in out and "generators:" in out and "mito-gen" in out


@pytest.mark.parametrize("command, old, new", [
    ("segment", ["--tta", "4"], ["--views", "4"]),
    ("segment", ["--tta"], ["--views", "4"]),  # --tta alone meant the four flips
    ("segment", ["--batch-size", "3"], ["--batch", "3"]),
    ("train", ["--init", "scratch"], ["--model", "scratch"]),
    ("train", ["--batch-size", "3"], ["--batch", "3"]),
    ("train-generator", ["--init", "gen"], ["--generator", "gen"]),
])
def test_old_spellings_parse_to_the_new_options_and_are_hidden(command, old, new):
    required = {
        "segment": ["em.tif", "-o", "out.tif"],
        "train": ["--images", "a.tif", "--masks", "b.tif", "-o", "run"],
        "train-generator": ["--images", "a.tif", "-o", "gen_out"],
    }[command]
    parser = cli.build_parser()
    a = parser.parse_args([command, *required, *old])
    b = parser.parse_args([command, *required, *new])
    assert vars(a) == vars(b)
    helptext = _subparsers()[command].format_help()
    assert old[0] not in helptext.replace(new[0], "")  # --batch is a prefix of --batch-size
    assert new[0] in helptext


def test_segment_options_take_the_new_and_the_old_keywords():
    assert SegmentOptions(tta=4, batch_size=3) == SegmentOptions(views=4, batch=3)
    o = SegmentOptions(views=1, batch=2)
    assert (o.tta, o.batch_size) == (1, 2)  # the former attribute names still read
    with pytest.raises(ValueError, match="--batch must be"):
        SegmentOptions(batch=0).validate()


def test_tile_and_overlap_are_input_pixels():
    card = {"scale": 0.5, "tile": 640, "overlap": 32}
    assert SegmentOptions().at_model_scale(card) == (None, None)  # the card's own
    assert SegmentOptions(tile=1280, overlap=64).at_model_scale(card) == (640, 32)
    assert SegmentOptions(tile=256, overlap=0).at_model_scale({"scale": 1.0}) == (256, 0)


def test_segment_passes_tile_at_model_scale(tmp_path, monkeypatch):
    from napari_cellgen.models.store import save_model
    from napari_cellgen.models.unet import UNet
    from napari_cellgen.segment import pipeline, predict

    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    card = {"context": 0, "scale": 0.5, "tile": 32, "overlap": 8,
            "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0}}
    save_model(tmp_path / "user" / "models" / "tiny", UNet(1, 1, base=2, depth=2), card)
    pipeline._MODEL_CACHE.clear()
    seen = {}
    real = predict.predict_stack

    def spy(*args, **kw):
        seen.update(tile=kw["tile"], overlap=kw["overlap"], batch=kw["batch_size"], views=kw["tta"])
        return (yield from real(*args, **kw))

    monkeypatch.setattr(predict, "predict_stack", spy)
    img = np.random.default_rng(0).integers(0, 255, (64, 96)).astype(np.uint8)
    pipeline.segment(img, SegmentOptions(model="tiny", tile=64, overlap=16, batch=2, views=1, measure=False))
    assert seen == {"tile": 32, "overlap": 8, "batch": 2, "views": 1}


def test_progress_in_a_log_file_is_a_line_every_few_percent():
    log = io.StringIO()  # not a terminal
    cb = tqdm_callback("job", file=log)
    for i in range(1, 1001):
        cb(Progress(i, 1000, "segment", {"loss": 0.5}))
    lines = log.getvalue().splitlines()
    assert 15 <= len(lines) <= 25, lines
    assert "\r" not in log.getvalue()
    assert lines[-1].startswith("segment: 1000/1000 (100 %)") and "loss 0.5" in lines[-1]
    # a new stage starts its own count; a short one still says where it ended
    for i in range(1, 4):
        cb(Progress(i, 3, "label"))
    assert log.getvalue().splitlines()[-1].startswith("label: 3/3 (100 %)")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_one_live_bar():
    term = _Terminal()
    cb = tqdm_callback("job", file=term)
    for i in range(1, 201):
        cb(Progress(i, 200, "segment"))
    text = term.getvalue()
    assert "\r" in text and "200/200" in text  # redrawn in place: one bar
    assert text.count("\n") <= 2
