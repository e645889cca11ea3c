"""npe2 sample data: a real FIB-SEM crop with its mitochondria mask (Lucchi et al. 2012).

The crop comes from the project's validation slices (z 140–164), see
``_data/sample/README.md`` for where exactly and the citation.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "_data" / "sample"
SAMPLE_IMAGE = SAMPLE_DIR / "lucchi_em.tif"
SAMPLE_LABELS = SAMPLE_DIR / "lucchi_mito.tif"


def sample_paths() -> tuple[Path, Path]:
    """Paths of the sample EM stack and its mask (for the CLI, tests and scripts)."""
    return SAMPLE_IMAGE, SAMPLE_LABELS


def make_sample_data() -> list[tuple]:
    """An Image layer (EM, 8 × 512 × 512, 5 nm) and a Labels layer (mitochondria, 0/1)."""
    from .io import read_stack
    from .io.reader import layer_data

    image, image_meta = read_stack(SAMPLE_IMAGE)
    labels, labels_meta = read_stack(SAMPLE_LABELS)
    img = layer_data(image, image_meta)
    lab = layer_data(labels, labels_meta)
    img[1]["name"] = "EM (Lucchi crop)"
    lab[1]["name"] = "mitochondria (ground truth)"
    lab[1]["opacity"] = 0.5
    return [img, (lab[0], lab[1], "labels")]
