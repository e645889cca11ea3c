"""``python -m napari_cellgen``: the ``cellgen`` command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
