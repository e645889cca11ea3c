"""The "Generate" dock widget: EM scans from masks drawn in napari, new pairs, or unconditional."""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)

from ._collapse import Advanced
from ._layers import bring_into_view, geometry_of, pixel_size_of, widen
from ._workers import Job

MODES = ["from Labels layer", "new pairs", "unconditional"]


def _generator_choices(_widget=None):
    from ..generate.store import list_generators

    return list(list_generators())


def generator_pixel_size(name) -> float | None:
    """Pixel size (nm) of the images a generator makes: the microscope it was adapted to (its
    acquisition model), else the images it was trained on (its VAE card); None if unknown."""
    import json

    from ..generate.store import ACQUISITION, resolve_generator

    try:
        folder = resolve_generator(name)
        card = json.loads((folder / "vae" / "card.json").read_text())
        value = float(card.get("pixel_size_nm") or 0)
        if (folder / ACQUISITION).is_file():
            acq = json.loads((folder / ACQUISITION).read_text())
            value = float(acq.get("pixel_size_nm") or 0) or value / float(acq.get("scale") or 1.0)
    except (OSError, ValueError, TypeError):
        return None
    return value if value > 0 else None


class GenerateWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        import napari

        self._viewer = viewer
        self._job = None  # the last run (a _workers.Job)
        self.generator = ComboBox(label="generator", choices=_generator_choices)
        self.mode = ComboBox(label="mode", choices=MODES, value=MODES[0])
        self.labels = create_widget(annotation=napari.layers.Labels, label="masks from",
                                    options={"nullable": True})
        self.n = SpinBox(label="samples", min=1, max=256, value=4)
        self.steps = SpinBox(label="steps", min=1, max=200, value=25)
        self.guidance = FloatSpinBox(label="guidance", min=0.0, max=20.0, step=0.5, value=2.0)
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.to_pool = CheckBox(label="add pairs to training pool", value=False)
        self._source = None  # (masks layer or None, world z of the shown slice or None) of the running job
        self.run_btn = PushButton(text="Generate")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")
        self.extend([self.generator, self.mode, self.labels, self.n, self.to_pool, self.run_btn, self.cancel_btn,
                     self.progress, self.status])
        self._advanced = Advanced(self, [self.steps, self.guidance, self.seed], before=self.run_btn)
        self.run_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.cancel)
        widen(self.generator, self.labels, self.mode)
        viewer.layers.events.inserted.connect(self._preselect_masks)
        self._preselect_masks()

    def reset_choices(self, *args):
        super().reset_choices(*args)
        self._advanced.reset_choices()
        self._preselect_masks()

    def _preselect_masks(self, event=None):
        """"masks from" starts on a Labels layer (the first one, or the first added), never on "-----"."""
        import napari

        if self.labels.value is not None:
            return  # the user's choice stays
        layers = [ly for ly in self._viewer.layers if isinstance(ly, napari.layers.Labels)
                  and not ly.name.startswith("generated (")]
        if layers:
            self.labels.reset_choices()
            self.labels.value = layers[0]

    def _masks(self):
        """The conditioning masks: the shown slice of the chosen Labels layer, n times."""
        layer = self.labels.value
        if layer is None:
            raise ValueError("choose a Labels layer with the mitochondria to draw (or mode 'new pairs')")
        z = None
        if layer.ndim == 3:  # the slice under the sliders, in the layer's own pixels
            z = int(np.clip(round(layer.world_to_data(self._viewer.dims.point)[0]), 0, layer.data.shape[0] - 1))
        data = np.asarray(layer.data if layer.ndim == 2 else layer.data[z])
        if not data.any():
            raise ValueError(f"{layer.name!r} is empty on this slice: paint some mitochondria first")
        return np.repeat(data[None], int(self.n.value), axis=0)

    def start(self):
        from napari.utils.notifications import show_error

        from ..generate.sample import sample

        if not self.generator.value:
            show_error("No generator installed: train one with `cellgen train-generator` or the Train dock.")
            return
        mode = self.mode.value
        try:
            masks = self._masks() if mode == MODES[0] else None
        except ValueError as exc:
            show_error(str(exc))
            return
        kw = {"steps": int(self.steps.value), "guidance": float(self.guidance.value), "seed": int(self.seed.value),
              "pairs": mode != MODES[2]}
        n = None if masks is not None else int(self.n.value)
        self._source = (self.labels.value if masks is not None else None,
                        self._viewer.dims.point[-3] if self._viewer.dims.ndim >= 3 else None)
        self._job = Job(sample, self.generator.value, masks, n, **kw, on_progress=self._progress,
                        on_done=self._done, on_error=self._failed, on_end=self._ended_as)
        self._set_running(True)
        self.status.value = "generating..."

    def _progress(self, p):
        self.progress.max = max(1, p.total)
        self.progress.value = min(p.done, p.total)

    def _done(self, samples):
        from napari.utils.notifications import show_info

        from ..train.pool import POOL

        name = f"generated ({self.generator.value})"
        geo, meta = self._placement()
        image = self._viewer.add_image(samples.images, name=name, colormap="gray", metadata=dict(meta), **geo)
        if samples.masks is not None:
            self._viewer.add_labels(np.asarray(samples.masks).astype(np.uint32), name=f"{name} masks",
                                    opacity=0.4, metadata=dict(meta), **geo)
            if self.to_pool.value:
                POOL.add(samples.images, samples.masks, source=name)
                show_info(f"Added {len(samples.images)} pairs to the training pool ({len(POOL)} in all)")
        bring_into_view(self._viewer, image)
        self._viewer.layers.selection.active = image  # Layers › Segment acts on it in one click
        self.status.value = f"{len(samples.images)} images"

    def _placement(self) -> tuple[dict, dict]:
        """Scale, translate and units of the generated (N, Y, X) layers, and their metadata.

        From the masks layer when there is one (same pixel size and units, the first image over the
        slice the masks came from); otherwise the generator's pixel size in nm (pixels when the
        viewer's layers are in pixels, so that units stay consistent), at the sliders' z.
        """
        layer, z = self._source or (None, None)
        if layer is not None and layer in self._viewer.layers:
            geo = geometry_of(layer, 3)
            ps = pixel_size_of(layer)
        else:
            from ..io.tiff import nm_per_unit

            ps = generator_pixel_size(self.generator.value)
            units = self._viewer.layers.extent.units if len(self._viewer.layers) else None
            physical = ps is not None and (units is None or nm_per_unit(str(units[-1])) is not None)
            geo = {"scale": (ps,) * 3 if physical else (1.0,) * 3, "translate": (0.0,) * 3,
                   "units": ("nm",) * 3 if physical else ("pixel",) * 3}
            ps = (ps,) * 3 if ps else None
        if z is not None:
            geo["translate"] = (float(z), *geo["translate"][1:])
        meta = {"cellgen_generator": self.generator.value}
        if ps:  # measurements of a segmentation of these layers come in nm
            meta["pixel_size_nm"] = tuple(ps[-3:]) if len(ps) >= 3 else (ps[-2], *ps[-2:])
        return geo, meta

    def _failed(self, exc):
        from napari.utils.notifications import show_error

        show_error(f"Generation failed: {exc}")
        self.status.value = f"error: {exc}"

    def _ended_as(self, state: str):
        self._set_running(False)
        if state == "cancelled":  # the job's state, set from the worker's signals, never from the status text
            self.status.value = "cancelled"

    def _set_running(self, running: bool):
        self.run_btn.enabled = not running
        self.cancel_btn.enabled = running

    def cancel(self):
        if self._job is not None and self._job.running:
            self._job.cancel()
            self.status.value = "cancelling..."
