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

from ._workers import QuietGeneratorWorker, surfacing_errors

MODES = ["from Labels layer", "new pairs", "unconditional"]


def _generator_choices(_widget=None):
    from ..generate.store import list_generators

    return list(list_generators())


class GenerateWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        import napari

        self._viewer = viewer
        self._worker = None
        self.generator = ComboBox(label="generator", choices=_generator_choices)
        self.mode = ComboBox(label="mode", choices=MODES, value=MODES[0])
        self.labels = create_widget(annotation=napari.layers.Labels, label="masks from",
                                    options={"nullable": True})
        self.n = SpinBox(label="samples", min=1, max=256, value=4)
        self.steps = SpinBox(label="steps", min=1, max=200, value=25)
        self.guidance = FloatSpinBox(label="guidance", min=0.0, max=20.0, step=0.5, value=2.0)
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.to_pool = CheckBox(label="add pairs to training pool", value=False)
        self.run_btn = PushButton(text="Generate")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")
        self.extend([self.generator, self.mode, self.labels, self.n, self.steps, self.guidance, self.seed,
                     self.to_pool, self.run_btn, self.cancel_btn, self.progress, self.status])
        self.run_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.cancel)

    def _masks(self):
        """The conditioning masks: the shown slice of the chosen Labels layer, n times."""
        layer = self.labels.value
        if layer is None:
            raise ValueError("choose a Labels layer with the mitochondria to draw (or mode 'new pairs')")
        data = np.asarray(layer.data if layer.ndim == 2 else
                          layer.data[int(self._viewer.dims.current_step[-3])])
        if not data.any():
            raise ValueError(f"{layer.name!r} is empty on this slice: paint some mitochondria first")
        return np.repeat(data[None], int(self.n.value), axis=0)

    def start(self):
        from napari.qt.threading import create_worker
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
        self._worker = create_worker(surfacing_errors(sample), self.generator.value, masks, n,
                                     _start_thread=False, _worker_class=QuietGeneratorWorker,
                                     _ignore_errors=True, **kw)
        self._worker.yielded.connect(self._progress)
        self._worker.returned.connect(self._done)
        self._worker.errored.connect(lambda e: show_error(f"Generation failed: {e}"))
        self._worker.finished.connect(lambda: self._set_running(False))
        self._set_running(True)
        self.status.value = "generating..."
        self._worker.start()

    def _progress(self, p):
        self.progress.max = max(1, p.total)
        self.progress.value = min(p.done, p.total)

    def _done(self, samples):
        from napari.utils.notifications import show_info

        from ..train.pool import POOL

        name = f"generated ({self.generator.value})"
        self._viewer.add_image(samples.images, name=name, colormap="gray")
        if samples.masks is not None:
            self._viewer.add_labels(np.asarray(samples.masks).astype(np.uint32), name=f"{name} masks",
                                    opacity=0.4)
            if self.to_pool.value:
                POOL.add(samples.images, samples.masks, source=name)
                show_info(f"Added {len(samples.images)} pairs to the training pool ({len(POOL)} in all)")
        self.status.value = f"{len(samples.images)} images"

    def _set_running(self, running: bool):
        self.run_btn.enabled = not running
        self.cancel_btn.enabled = running
        if not running and self.status.value == "generating...":
            self.status.value = "cancelled"

    def cancel(self):
        if self._worker is not None:
            self._worker.quit()
