"""The "Segment" dock widget: image layer + model + options -> a Labels layer with features."""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)

from ..segment.quantize import PRECISIONS
from ._collapse import Advanced
from ._layers import features_from, layer_array, pixel_size_of, put_labels, widen
from ._workers import Job


def _model_choices(_widget=None):
    from ..models.store import DEFAULT_MODEL, THICK_SECTIONS_MODEL, list_models
    from .interop import OPENED_PACKAGES

    # (label, value): "auto" (the pipeline picks, segment/pipeline.py:auto_model), registered names,
    # then bioimage.io packages opened with "Open bioimage.io .zip"
    auto = [(f"auto: {DEFAULT_MODEL} ({THICK_SECTIONS_MODEL} for thick sections)", "auto")]
    return auto + [(n, n) for n in list_models()] + list(OPENED_PACKAGES.items())


def _cluster_job(layer, data, options, scheduler: str, pixel_size):
    """(function, args, kwargs) segmenting ``layer`` block by block on the dask cluster at ``scheduler``."""
    import datetime as _dt

    from ..models.store import user_dir
    from ..segment.blockwise import check_precision, segment_on_cluster_iter
    from ..segment.cluster import check_address

    if data.ndim != 3:
        raise ValueError("the dask cluster segments (Z, Y, X) stacks; clear the scheduler field for a 2D image")
    check_precision(options.precision, "clear the scheduler field")
    try:
        scheduler = check_address(scheduler)  # refused here, before a thread starts; dask judges the rest
    except ValueError as exc:
        raise ValueError(f"{exc} (or leave the field empty to segment in this process)") from None
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in layer.name)[:60] or "image"
    out = user_dir().parent / "cluster-results" / f"{safe}-{_dt.datetime.now():%Y%m%d-%H%M%S}-labels.zarr"
    out.parent.mkdir(parents=True, exist_ok=True)
    src = getattr(getattr(layer, "source", None), "path", None)
    src = src if src and Path(src).exists() else None  # the workers read the file themselves
    return segment_on_cluster_iter, (data, out, options), {"scheduler": scheduler, "source_path": src,
                                                            "pixel_size": pixel_size}


def run_segmentation(viewer, layer, options, *, on_progress=None, on_done=None, on_error=None, on_end=None,
                     scheduler=None):
    """Start a :class:`Job` segmenting ``layer`` in a thread; returns it (``cancel()``, ``state``).

    ``on_done(layer, result)`` after the labels layer is added, ``on_error(exc)`` after the error
    is shown, ``on_end(state)`` when the thread has finished ("done", "failed" or "cancelled").
    With ``scheduler`` (a dask address) the stack is segmented block by block on that cluster and
    the labels are written to a zarr in the user folder (its path is in the layer's metadata).
    """
    from napari.utils.notifications import show_error, show_info

    from ..segment.pipeline import segment_iter

    if layer is None:
        raise ValueError("select an image layer to segment")
    if getattr(layer, "rgb", False):
        raise ValueError(f"{layer.name!r} is an RGB image: convert it to grayscale first")
    data = layer_array(layer)
    pixel_size = pixel_size_of(layer)
    if scheduler:
        func, args, kwargs = _cluster_job(layer, data, options, scheduler, pixel_size)
    else:
        func, args, kwargs = segment_iter, (data, options), {"pixel_size": pixel_size}

    def returned(res):
        table = res.table or {}
        features = features_from(table) if table else None
        meta = {"cellgen_model": res.card.get("name"), "cellgen_model_path": res.card.get("path"),
                "pixel_size_nm": pixel_size, "cellgen_precision": (res.options or {}).get("precision", "fp32"),
                **({"cellgen_labels_zarr": res.options["labels_zarr"]} if "labels_zarr" in (res.options or {})
                   else {})}
        out, replaced = put_labels(viewer, f"{layer.name} mitochondria", res.labels, like=layer,
                                   features=features, metadata=meta)
        note = f" — {res.message}" if res.message else ""
        show_info(f"{res.n_objects} mitochondria in {out.name!r}" + (" (updated)" if replaced else "") + note)
        if on_done:
            on_done(out, res)

    def errored(exc):
        show_error(f"Segmentation failed: {exc}")
        if on_error:
            on_error(exc)

    return Job(func, *args, **kwargs, on_progress=on_progress, on_done=returned, on_error=errored, on_end=on_end)


class SegmentWidget(Container):
    """Segment mitochondria in the chosen image layer with a shipped or user model."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        import napari

        self._viewer = viewer
        self._job = None  # the last run (a _workers.Job)
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.model = ComboBox(label="model", choices=_model_choices)
        self.model_dir = FileEdit(label="or checkpoint", mode="d", value="",
                                  tooltip="a model folder with model.safetensors + card.json")
        self.threshold = FloatSlider(label="threshold", min=0.05, max=0.95, step=0.05, value=0.5)
        self.tile = SpinBox(label="tile (px, 0 = model's)", min=0, max=4096, step=64, value=0,
                            tooltip="tile side in image pixels, like the Train dock's patch (cellgen segment "
                                    "--tile); 0: the model's own (1280 px for the shipped model)")
        self.overlap = SpinBox(label="overlap (px)", min=0, max=1024, step=16, value=64,
                               tooltip="overlap of neighbouring tiles in image pixels (cellgen segment --overlap)")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.mode = ComboBox(label="labels", choices=["3D", "2D per slice"], value="3D",
                             tooltip="2D per slice: each slice is its own image, for the model too")
        self.slices = ComboBox(label="slices", choices=["auto", "volume", "independent"], value="auto",
                               tooltip="auto: a stack of unrelated images (generated tiles, separate "
                                       "micrographs) is detected and segmented slice by slice; volume: "
                                       "neighbouring slices are the model's context; independent: each slice "
                                       "alone (cellgen segment --slices)")
        self.pixel_size = LineEdit(label="pixel size (nm)", value="",
                                   tooltip="empty: the layer's (from its file); else one number or Z,Y,X in nm. "
                                           "The model runs at its training pixel size (cellgen segment --pixel-size)")
        self.z_context = ComboBox(label="z context", choices=["auto", "neighbours", "self"], value="auto",
                                  tooltip="auto: each slice is its own context when sections are >= 3x thicker "
                                          "than the model's training data (cellgen segment --z-context)")
        self.min_size = SpinBox(label="min size (px)", min=0, max=10**7, value=200)
        self.split = CheckBox(label="split touching", value=False)
        self.views = ComboBox(label="views", choices=[("1 (fastest)", 1), ("2 (+ 180° rotation)", 2),
                                                       ("4 (flips)", 4)], value=2,
                              tooltip="test-time augmentation: average the model over this many views of "
                                      "the image (steadier on ambiguous objects; each view costs one pass)")
        self.precision = ComboBox(label="precision", choices=list(PRECISIONS), value="auto",
                                  tooltip="int8: the network quantized on the CPU, calibrated on this image "
                                          "(~3 s): about 1.7x faster here, same accuracy on Lucchi; auto: "
                                          "int8 on the CPU, fp32 on a GPU or a dask cluster "
                                          "(cellgen segment --precision)")
        self.scheduler = LineEdit(label="dask scheduler", value="",
                                  tooltip="empty: segment in this process. tcp://HOST:8786: block by block on "
                                          "that dask cluster (workers must be able to read the image file); "
                                          "the labels are written to a zarr in the user folder")
        self.run_btn = PushButton(text="Segment")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend([self.image, self.model, self.threshold, self.mode, self.run_btn, self.cancel_btn,
                     self.progress, self.status])
        self._advanced = Advanced(self, [self.model_dir, self.slices, self.pixel_size, self.z_context,
                                         self.min_size, self.split, self.views, self.precision,
                                         self.tile, self.overlap, self.device, self.scheduler], before=self.run_btn)
        widen(self.image, self.model)
        self.run_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.cancel)
        self._add_interop()

    def _add_interop(self):
        """Buttons: run a bioimage.io package from `cellgen export`; save labels into the source OME-Zarr."""
        self.package_btn = PushButton(text="Open bioimage.io model (.zip)…",
                                      tooltip="a package written by `cellgen export` / the Train dock's export")
        self.zarr_btn = PushButton(text="Save labels into the OME-Zarr",
                                   tooltip="write this image's labels layer as IMG.ome.zarr/labels/mitochondria "
                                           "(the image itself is not changed)")
        self.insert(self.index(self.model) + 1, self.package_btn)
        self.append(self.zarr_btn)
        self.package_btn.changed.connect(lambda: self.open_package())
        self.zarr_btn.changed.connect(lambda: self.save_into_zarr())

    def open_package(self, path=None):
        from napari.utils.notifications import show_error

        from .interop import ask_path, open_package

        path = path or ask_path(self.native, "bioimage.io model package", "bioimage.io package (*.zip)", save=False)
        if not path:
            return
        try:
            label, value = open_package(path)
        except ValueError as exc:
            show_error(str(exc))
            return
        self.model.reset_choices()
        self.model.value = value
        self.model_dir.line_edit.value = ""

    def save_into_zarr(self, name: str = "mitochondria"):
        from napari.utils.notifications import show_error

        from .interop import save_labels_into_zarr

        layer = self.image.value
        out = self._viewer.layers[f"{layer.name} mitochondria"] if layer is not None and \
            f"{layer.name} mitochondria" in self._viewer.layers else None
        try:
            self._zarr_worker = save_labels_into_zarr(layer, out, name)
        except ValueError as exc:
            show_error(str(exc))

    def options(self):
        from ..segment.pipeline import SegmentOptions

        mdir = self.model_dir.value
        model = str(mdir) if mdir and str(mdir) not in ("", ".") and Path(mdir).is_dir() else self.model.value
        return SegmentOptions(
            model=model, threshold=float(self.threshold.value), tile=int(self.tile.value) or None,
            overlap=int(self.overlap.value), device=self.device.value,
            mode="3d" if self.mode.value == "3D" else "2d", min_size=int(self.min_size.value),
            split=bool(self.split.value), views=int(self.views.value), slices=self.slices.value,
            z_context=self.z_context.value, pixel_size=self._pixel_size(), precision=self.precision.value,
        )

    def _pixel_size(self):
        text = self.pixel_size.value.strip()
        if not text:
            return None
        try:
            return tuple(float(v) for v in text.replace("x", ",").split(",") if v.strip())
        except ValueError:
            raise ValueError(f"pixel size {text!r} is not numbers of nm (e.g. 5 or 40,5,5)") from None

    def reset_choices(self, *args):
        super().reset_choices(*args)
        self._advanced.reset_choices()

    def select_model(self, name: str) -> None:
        """Make ``name`` (e.g. a model just trained in the Train dock) the model to segment with."""
        self.model.reset_choices()
        if name in self.model.choices:
            self.model.value = name
            self.model_dir.line_edit.value = ""  # (FileEdit.value = "" would mean the working directory)

    @property
    def _ended(self) -> bool:
        """The last run has ended (returned, failed or was cancelled), or there was none."""
        return self._job is None or not self._job.running

    def start(self):
        from napari.utils.notifications import show_error

        try:
            self._job = run_segmentation(
                self._viewer, self.image.value, self.options(), on_progress=self._progress,
                on_done=lambda _, res: self._finish(f"done — {res.message}" if res.message else "done"),
                on_error=lambda e: self._finish(f"error: {e}"),
                on_end=self._ended_as, scheduler=self.scheduler.value.strip() or None,
            )
        except ValueError as exc:
            show_error(str(exc))
            return
        self._set_running(True)
        self.status.value = "segmenting..."

    def _progress(self, p):
        self.progress.max = max(1, p.total)
        self.progress.value = min(p.done, p.total)
        self.status.value = f"{p.stage} {p.done}/{p.total}"

    def _finish(self, msg):
        self.status.value = msg

    def _ended_as(self, state: str):
        self._set_running(False)
        if state == "cancelled":  # the job's state, set from the worker's signals ("done"/"failed" said so)
            self.status.value = "cancelled"

    def _set_running(self, running: bool):
        self.run_btn.enabled = not running
        self.cancel_btn.enabled = running

    def cancel(self):
        if self._job is not None and self._job.running:
            self._job.cancel()
            self.status.value = "cancelling..."
