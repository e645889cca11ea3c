"""Subcommands of the ``cellgen`` command line (see :mod:`napari_cellgen.cli`)."""
