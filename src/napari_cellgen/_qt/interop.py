"""Dock actions for sharing results with other tools: bioimage.io packages and OME-Zarr labels.

The work is the Qt-free core (:mod:`napari_cellgen.models.bioimageio`,
:mod:`napari_cellgen.io.ome_labels`) run in a thread worker; this module only asks for paths
and reports the outcome in one line.
"""

from __future__ import annotations

from pathlib import Path

# bioimage.io packages opened in this session: offered in the Segment dock's model list
OPENED_PACKAGES: dict[str, str] = {}


def ask_path(parent, title: str, pattern: str, save: bool) -> str | None:
    from qtpy.QtWidgets import QFileDialog

    fn = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
    path, _ = fn(parent, title, "", pattern)
    return path or None


def _as_job(func):
    """A plain function as a job generator (no progress), so it runs through the docks' one :class:`Job`."""

    def job(*args):
        return func(*args)
        yield  # unreachable: makes this a generator

    return job


def _start(func, *args, done, what: str, on_end=None):
    from napari.utils.notifications import show_error, show_info

    from ._workers import Job

    def returned(result):
        show_info(done(result))
        if on_end:
            on_end(result, None)

    def errored(exc):
        show_error(f"{what} failed: {exc}")
        if on_end:
            on_end(None, exc)

    return Job(_as_job(func), *args, on_done=returned, on_error=errored).worker


def export_bioimageio(model, path, on_end=None):
    """Export ``model`` (name or folder) to the bioimage.io package ``path`` in a thread; returns the worker."""
    from ..models.bioimageio import export_package

    path = Path(path)
    if path.suffix.lower() != ".zip":
        path = path.with_name(path.name + ".zip")
    return _start(export_package, model, path, what="bioimage.io export", on_end=on_end,
                  done=lambda p: f"bioimage.io package written: {p} (run it with `cellgen segment --model {p.name}`)")


def open_package(path) -> tuple[str, str]:
    """Check a bioimage.io .zip is one napari-cellgen runs; returns its (label, path) model choice."""
    from ..models.store import read_card

    card = read_card(Path(path))  # refuses packages not written by `cellgen export`, in one line
    label = f"{Path(path).name} (bioimage.io: {card.get('name', '?')})"
    OPENED_PACKAGES[label] = str(path)
    return label, str(path)


def zarr_source(layer) -> Path | None:
    """The OME-Zarr image container ``layer`` was read from, or None."""
    from ..io.ome_labels import labels_container

    for cand in (getattr(getattr(layer, "source", None), "path", None), (layer.metadata or {}).get("path")):
        if cand and labels_container(Path(cand) / "labels" / "x") is not None:
            return Path(cand)
    return None


def save_labels_into_zarr(image_layer, labels_layer, name: str = "mitochondria", on_end=None):
    """Write ``labels_layer`` as ``CONTAINER/labels/NAME`` of the OME-Zarr ``image_layer`` came from."""
    from ..io.ome_labels import check_labels_target, write_labels
    from ._layers import layer_array

    if image_layer is None or labels_layer is None:
        raise ValueError("select an image read from an OME-Zarr and segment it first")
    root = zarr_source(image_layer)
    if root is None:
        raise ValueError(f"{image_layer.name!r} was not read from an OME-Zarr image (IMG.ome.zarr)")
    target = root / "labels" / name
    data = layer_array(labels_layer)
    check_labels_target(target, tuple(data.shape))  # refused here, before a thread starts
    return _start(write_labels, target, data, what="Saving the labels", on_end=on_end,
                  done=lambda p: f"labels saved into {root.name}: labels/{p.name}")


class BioimageioExport:
    """The Train dock's "Export to bioimage.io" button (mixed into TrainWidget, which owns ``status``,
    ``progress`` and ``base``): exports the model just trained (``_trained``), else "start from"."""

    def _add_export(self):
        from magicgui.widgets import PushButton

        from ._collapse import _row_of

        self._trained = None
        self._export_worker = None
        self.export_btn = PushButton(text="Export to bioimage.io…",
                                     tooltip="write the model just trained (else the 'start from' model) as a "
                                             "bioimage.io package (.zip) for other tools")
        layout = self.native.layout()  # under Start/Stop
        layout.insertWidget(_row_of(layout, self.progress.native), self.export_btn.native)
        self.export_btn.changed.connect(lambda: self.export_bioimageio())

    def export_bioimageio(self, path=None):
        """Export to ``path`` (asked with a file dialog when None); returns the thread worker."""
        from napari.utils.notifications import show_error

        model = self._trained or (self.base.value if self.base.value not in (None, "scratch") else None)
        if model is None:
            show_error("Train a model first (or choose one under 'start from') to export it.")
            return None
        name = Path(str(model)).name
        path = path or ask_path(self.native, "Export to bioimage.io", "bioimage.io package (*.zip)", save=True)
        if not path:
            return None
        self.export_btn.enabled = False
        self.status.value = f"exporting {name} to {Path(path).name}..."

        def ended(result, exc):
            self.export_btn.enabled = True
            self.status.value = f"exported {name}: {result}" if exc is None else f"export failed: {exc}"

        self._export_worker = export_bioimageio(model, path, on_end=ended)
        return self._export_worker
