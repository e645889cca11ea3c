"""The "Train" dock widget: train or fine-tune a segmenter, or train a generator, in a thread worker.

All the work is :func:`napari_cellgen.train.loop.train_model` (segmenter) or
:func:`napari_cellgen.generate.train.train_generator_job` (generator); this file only turns
widget values into their arguments and their progress into a bar, a label and a plot.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import notification_manager, show_error, show_info

from ._layers import layer_array
from ._workers import QuietGeneratorWorker, surfacing_errors

REDRAW_S = 2.0  # at most one plot redraw per this many seconds (a draw holds the GIL)


class _TrainWorker(QuietGeneratorWorker):
    """``quit()`` asks the job to stop after the current step.

    The job then closes the training generator in the worker thread (which writes the
    best checkpoint) and returns normally, so ``returned`` still fires. Errors are shown
    by the widget only (TrainWidget._errored).
    """

    def __init__(self, func, *args, **kwargs):
        stop = threading.Event()
        super().__init__(func, *args, stop=stop.is_set, **kwargs)
        self.stop_event = stop

    def quit(self) -> None:
        self.stop_event.set()


def _if_alive(method):
    """Skip a worker callback that arrives after the widget was closed (Qt objects deleted)."""

    def wrapper(self, *args):
        try:
            return method(self, *args)
        except RuntimeError as exc:
            if "has been deleted" not in str(exc):
                raise

    return wrapper


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


class TrainWidget(Container):
    """Train a segmenter from scratch or fine-tune one on the layers you corrected."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        import napari

        self._viewer = viewer
        self._worker = None
        self._history: dict[str, list] = {"step": [], "loss": [], "vstep": [], "iou": []}
        self._t0, self._last_draw = (0.0, 0), 0.0
        img_t, lab_t = napari.layers.Image, napari.layers.Labels
        self.target = ComboBox(label="train", choices=["segmenter", "generator"], value="segmenter",
                               tooltip="segmenter: the U-Net; generator: the VAE + mask-conditioned "
                                       "diffusion model of the Generate dock (first image layer and its labels)")
        self.images = Select(label="image layer(s)", choices=self._layer_choices(img_t))
        self.labels = Select(label="labels layer(s)", choices=self._layer_choices(lab_t),
                             tooltip="your masks/corrections, one per image layer, same shape")
        self.slices = LineEdit(label="slices", value="",
                               tooltip="e.g. 0-9,40; empty = the slices you painted, else all labelled")
        self.base = ComboBox(label="start from", choices=self._base_choices)
        self.gen_base = ComboBox(label="start from", choices=self._gen_base_choices, visible=False,
                                 tooltip="scratch, or a generator whose VAE (and denoiser) to continue from")
        self.keep_vae = CheckBox(text="keep its VAE (train the denoiser only)", value=True, visible=False)
        self.fresh_denoiser = CheckBox(
            text="new denoiser (it must not reuse masks you did not select)", value=False, visible=False)
        self.vae_steps = SpinBox(label="VAE steps", min=1, max=1_000_000, value=3000, visible=False)
        self.diffusion_steps = SpinBox(label="denoiser steps", min=1, max=1_000_000, value=4000, visible=False)
        self.steps = SpinBox(label="steps", min=1, max=100000, value=300)
        self.patch = SpinBox(label="patch (px)", min=32, max=2048, step=32, value=256)
        self.batch = SpinBox(label="batch", min=1, max=128, value=8)
        self.lr = LineEdit(label="learning rate", value="auto", tooltip="auto: 2e-3 scratch, 5e-4 fine-tune")
        self.val_fraction = FloatSpinBox(label="validation", min=0.0, max=0.9, step=0.05, value=0.15)
        self.name = LineEdit(label="model name", value="", tooltip="empty: <base>-ft-<date>")
        self.pool_info = Label(label="training pool", value="no synthetic pairs")
        self.synthetic_ratio = FloatSpinBox(
            label="synthetic share", min=0.0, max=1.0, step=0.05, value=0.5,
            tooltip="fraction of each batch drawn from the generated pairs of the training pool "
                    "(Generate dock › add pairs to training pool); 0 = real data only")
        self.hard = FloatSpinBox(
            label="hard examples", min=0.0, max=0.5, step=0.05, value=0.0,
            tooltip="share of patches centred on what the model currently gets wrong (look-alikes, missed "
                    "edges), found again five times per run; 0 = off")
        self.finetune_btn = PushButton(text="Fine-tune on my corrections")
        self.start_btn = PushButton(text="Start")
        self.stop_btn = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")
        self.extend([self.target, self.images, self.labels, self.slices, self.base, self.gen_base, self.keep_vae,
                     self.fresh_denoiser, self.vae_steps, self.diffusion_steps,
                     self.steps, self.patch, self.batch,
                     self.lr, self.val_fraction, self.name, self.pool_info, self.synthetic_ratio, self.hard,
                     self.finetune_btn, self.start_btn, self.stop_btn,
                     self.progress, self.status])
        for sel in (self.images, self.labels):
            sel.native.setMaximumHeight(72)
        self._make_plot()
        self.finetune_btn.changed.connect(self.finetune_on_corrections)
        self.start_btn.changed.connect(self.start)
        self.stop_btn.changed.connect(self.stop)
        self.base.value = self._default_base()
        self.target.changed.connect(self._target_changed)
        self.gen_base.changed.connect(self._target_changed)
        self.keep_vae.changed.connect(self._target_changed)
        from ..train.pool import POOL

        POOL.connect(self._pool_changed)
        self.native.destroyed.connect(lambda *_: POOL.disconnect(self._pool_changed))
        self._pool_changed()
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self.reset_choices)
        viewer.layers.events.inserted.connect(lambda e: self._watch(e.value))
        for layer in viewer.layers:
            self._watch(layer)

    # the widgets that belong to each kind of training
    _SEG_ONLY = ("base", "steps", "patch", "batch", "lr", "val_fraction", "pool_info", "synthetic_ratio",
                 "hard", "finetune_btn")
    _GEN_ONLY = ("gen_base", "vae_steps", "diffusion_steps")

    def _target_changed(self, *_):
        gen = self.target.value == "generator"
        for name in self._SEG_ONLY:
            getattr(self, name).visible = not gen
        for name in self._GEN_ONLY:
            getattr(self, name).visible = gen
        from_gen = gen and self.gen_base.value not in (None, "scratch")
        self.keep_vae.visible = from_gen
        self.fresh_denoiser.visible = from_gen
        self.vae_steps.visible = gen and not (from_gen and self.keep_vae.value)
        self._iou_line.axes.set_visible(not gen)
        self._ax.set_ylabel("VAE / denoiser loss" if gen else "training loss", color="tab:blue")

    def _gen_base_choices(self, _w=None):
        from ..generate.store import list_generators

        return ["scratch", *list_generators()]

    def _pool_changed(self):
        from ..train.pool import POOL

        n = len(POOL)
        self.pool_info.value = f"{n} synthetic pairs" if n else "no synthetic pairs"

    def _synthetic(self):
        """The pool's pairs when they should be mixed in, else None."""
        from ..train.pool import POOL

        return POOL.arrays() if len(POOL) and float(self.synthetic_ratio.value) > 0 else None

    # -- choices -----------------------------------------------------------------
    def _layer_choices(self, kind):
        def choices(_w=None):
            return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)]

        return choices

    def _base_choices(self, _w=None):
        from ..models.store import list_models

        extra = [self._extra_base] if getattr(self, "_extra_base", None) else []
        return ["scratch", *list_models(), *extra]

    def _default_base(self, preferred=None) -> str:
        from ..models.store import DEFAULT_MODEL

        choices = self._base_choices()
        for c in (preferred, DEFAULT_MODEL):
            if c in choices:
                return c
        return choices[1] if len(choices) > 1 else "scratch"

    def _watch(self, layer):
        """Remember which slices of a Labels layer the user painted (for fine-tuning)."""
        from napari.layers import Labels

        if isinstance(layer, Labels) and layer.ndim == 3:
            from ..train.loop import edited_slices

            def on_paint(event, layer=layer):
                done = set(layer.metadata.get("cellgen_edited_slices", []))
                layer.metadata["cellgen_edited_slices"] = sorted(done | edited_slices(event.value))

            layer.events.paint.connect(on_paint)

    # -- the correction loop --------------------------------------------------------
    def finetune_on_corrections(self):
        """Fine-tune the model that made the selected Labels layer on the slices painted in it."""
        from napari.layers import Image, Labels

        active = self._viewer.layers.selection.active
        layer = active if isinstance(active, Labels) else (self.labels.value or [None])[0]
        if layer is None:
            show_error("Select the Labels layer you corrected first.")
            return
        src = layer.name.split(" mitochondria")[0]
        shape = layer.data.shape
        same = [lyr for lyr in self._viewer.layers if isinstance(lyr, Image) and lyr.data.shape == shape]
        image = next((lyr for lyr in same if lyr.name == src), same[0] if same else None)
        if image is None:
            show_error(f"No image layer with the shape {layer.data.shape} of {layer.name!r}.")
            return
        meta = layer.metadata or {}
        base, path = meta.get("cellgen_model"), meta.get("cellgen_model_path")
        if base not in self._base_choices() and path and Path(path).is_dir():
            self._extra_base = base = str(path)
            self.base.reset_choices()
        self.images.value, self.labels.value = [image], [layer]
        self.base.value = self._default_base(base)
        edited = meta.get("cellgen_edited_slices") or []
        self.slices.value = ",".join(str(z) for z in edited)
        self.name.value = self._auto_name(self.base.value)
        if not edited:
            show_info(f"No painted slices recorded in {layer.name!r}: training on every labelled slice.")
        self.start()

    @staticmethod
    def _auto_name(init: str) -> str:
        return f"mito-{_stamp()}" if init == "scratch" else f"{Path(init).name}-ft-{_stamp()}"

    # -- running ------------------------------------------------------------------
    def _job_args(self):
        from ..train.data import DataError, check_pair, parse_slices
        from ..train.loop import (
            TrainConfig,
            base_model_info,
            default_lr,
            default_run_dir,
            patch_at_model_scale,
        )

        images, labels = list(self.images.value), list(self.labels.value)
        if not images or not labels:
            raise DataError("choose at least one image layer and its labels layer")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} image layers but {len(labels)} labels layers: "
                            "pair them one to one")
        order = {lyr.name: i for i, lyr in enumerate(self._viewer.layers)}
        images.sort(key=lambda lyr: order[lyr.name])
        labels.sort(key=lambda lyr: order[lyr.name])
        pairs = []
        for img, lab in zip(images, labels, strict=False):
            if getattr(img, "rgb", False):
                raise DataError(f"{img.name!r} is an RGB image: convert it to grayscale first")
            data, mask = layer_array(img), layer_array(lab)
            check_pair(data, mask, f"{img.name!r} / {lab.name!r}")
            text = self.slices.value.strip()
            n = data.shape[0] if data.ndim == 3 else 1
            pairs.append((data, mask, parse_slices(text, n) if text else None))
        init = self.base.value
        lr = self.lr.value.strip().lower()
        try:
            lr = default_lr(init) if lr in ("", "auto") else float(lr)
        except ValueError:
            raise DataError(f"learning rate {self.lr.value!r} is not a number (or 'auto')") from None
        info = base_model_info(init)
        name = self.name.value.strip() or self._auto_name(init)
        cfg = TrainConfig(init=init, steps=int(self.steps.value), batch=int(self.batch.value), lr=lr,
                          patch=patch_at_model_scale(int(self.patch.value), info["scale"], info["depth"]),
                          val_fraction=float(self.val_fraction.value), name=name,
                          val_every=max(1, int(self.steps.value) // 20),
                          synthetic_ratio=float(self.synthetic_ratio.value) if self._synthetic() else 0.0,
                          hard_prob=float(self.hard.value), mine_every=max(1, int(self.steps.value) // 5),
                          notes={"base_model": info["name"], "layers": [lyr.name for lyr in labels]})
        return pairs, default_run_dir(name), cfg

    def _gen_job_args(self):
        """(function, args, kwargs, total steps) of a generator training from the widget's values."""
        from ..generate.train import GeneratorConfig, train_generator_job
        from ..train.data import DataError, check_pair, parse_slices
        from ..train.loop import default_run_dir

        images, labels = list(self.images.value), list(self.labels.value)
        if not images:
            raise DataError("choose the image layer to learn from (and its labels layer for masks)")
        if len(images) > 1 or len(labels) > 1:
            raise DataError("a generator learns from one image layer (and its labels): select one of each")
        img, lab = images[0], (labels[0] if labels else None)
        if getattr(img, "rgb", False):
            raise DataError(f"{img.name!r} is an RGB image: convert it to grayscale first")
        data = layer_array(img)
        mask = None
        if lab is not None:
            mask = layer_array(lab)
            check_pair(data, mask, f"{img.name!r} / {lab.name!r}")
        n = data.shape[0] if data.ndim == 3 else 1
        text = self.slices.value.strip()
        if text:
            slices = parse_slices(text, n)
        elif lab is not None:
            edited = (lab.metadata or {}).get("cellgen_edited_slices") or []
            slices = sorted(edited) or None  # painted slices, else every labelled one
        else:
            slices = []  # no masks: an unconditional generator
        init = self.gen_base.value
        init = None if init in (None, "scratch") else init
        keep_vae = init is not None and bool(self.keep_vae.value)
        name = self.name.value.strip() or (f"gen-{_stamp()}" if init is None else f"{Path(init).name}-ft-{_stamp()}")
        cfg = GeneratorConfig(vae_steps=0 if keep_vae else int(self.vae_steps.value),
                              diffusion_steps=int(self.diffusion_steps.value), name=name,
                              val_every=max(1, min(250, int(self.diffusion_steps.value) // 10)),
                              notes={"layers": [img.name] + ([lab.name] if lab else [])})
        fresh = bool(self.fresh_denoiser.value) and init is not None
        kwargs = {"slices": slices, "init": init, "fresh_denoiser": fresh, "register_as": name}
        total = cfg.vae_steps + cfg.diffusion_steps
        return train_generator_job, (data, mask, default_run_dir(name), cfg), kwargs, total

    def start(self):
        if self._worker is not None:
            return
        try:
            if self.target.value == "generator":
                func, args, kwargs, total = self._gen_job_args()
            else:
                pairs, out_dir, cfg = self._job_args()
                from ..train.loop import train_model

                func, args, total = train_model, (pairs, out_dir, cfg), cfg.steps
                kwargs = {"register_as": cfg.name, "synthetic": self._synthetic()}
        except ValueError as exc:
            show_error(f"Cannot train: {exc}")
            return

        self._history = {k: [] for k in self._history}
        self._gen_offset = {}
        self.progress.max, self.progress.value = total, 0
        self.status.value = "preparing data..."
        self._worker = create_worker(
            surfacing_errors(func), *args, **kwargs,
            _worker_class=_TrainWorker,
            _start_thread=False,
            _connect={"yielded": self._yielded, "returned": self._returned, "errored": self._errored,
                      "finished": self._finished},
        )
        self._set_running(True)
        self._worker.start()

    def stop(self):
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "stopping: saving the best model..."

    @_if_alive
    def _yielded(self, p):
        if p.stage in ("vae", "diffusion", "encode", "prepare"):
            return self._gen_yielded(p)
        info = p.info or {}
        if p.stage == "find hard examples":
            self.status.value = f"step {p.done}/{p.total} · finding hard examples (a pass over the training slices)..."
            return
        if p.stage != "train":
            return
        self.progress.value = p.done
        h = self._history
        h["step"].append(p.done)
        h["loss"].append(info.get("loss", float("nan")))
        if "val_iou" in info:
            h["vstep"].append(p.done)
            h["iou"].append(info["val_iou"])
        if len(h["step"]) == 1:  # time from the first step: data preparation is not a step
            self._t0 = (time.perf_counter(), p.done)
        t_first, s_first = self._t0
        eta = (time.perf_counter() - t_first) / max(1, p.done - s_first) * (p.total - p.done)
        best = f" · best val IoU {max(h['iou']):.3f}" if h["iou"] else ""
        rate = info.get("samples_per_s", 0.0)
        self.status.value = (f"step {p.done}/{p.total} · loss {h['loss'][-1]:.3f}{best} · "
                             f"{rate:.1f} samples/s · ETA {eta // 60:.0f}:{eta % 60:02.0f}")
        if time.perf_counter() - self._last_draw > REDRAW_S:
            self._draw()

    def _gen_yielded(self, p):
        """Progress of a generator training: VAE steps, then latent encoding, then denoiser steps."""
        info = p.info or {}
        if p.stage in ("prepare", "encode"):
            what = "preparing data" if p.stage == "prepare" else "encoding latents"
            self.status.value = f"{what}... {p.done}/{p.total}"
            return
        if p.stage not in self._gen_offset:  # a new stage: its steps continue the x axis
            self._gen_offset[p.stage] = (self._history["step"][-1] if self._history["step"] else 0, time.perf_counter(),
                                         p.done)
        offset, t_first, s_first = self._gen_offset[p.stage]
        vae_total = 0 if "vae" not in self._gen_offset else int(self.vae_steps.value)
        self.progress.max = max(self.progress.max, vae_total + p.total)
        self.progress.value = min(self.progress.max, (vae_total if p.stage == "diffusion" else 0) + p.done)
        h = self._history
        h["step"].append(offset + p.done - s_first + 1)
        h["loss"].append(info.get("loss", float("nan")))
        eta = (time.perf_counter() - t_first) / max(1, p.done - s_first) * (p.total - p.done)
        stage = "VAE" if p.stage == "vae" else "denoiser"
        val = info.get("val_loss_cond", info.get("val_loss_uncond"))
        val_txt = f" · val {val:.3f}" if isinstance(val, float) else ""
        self.status.value = (f"{stage} step {p.done}/{p.total} · loss {h['loss'][-1]:.3f}{val_txt} · "
                             f"stage ETA {eta // 60:.0f}:{eta % 60:02.0f}")
        if time.perf_counter() - self._last_draw > REDRAW_S:
            self._draw()

    @_if_alive
    def _returned(self, result):
        self._draw()
        if "complete" in result:  # a generator training
            return self._gen_returned(result)
        card = result.get("card") or {}
        iou = (card.get("metrics") or {}).get("val_iou")
        reg = result.get("registered")
        if reg is None:
            self.status.value = "stopped before training began: nothing saved"
            show_info("Training stopped before the first step; no model was saved.")
            return
        what = "stopped early" if result.get("stopped") else "finished"
        iou_txt = f", validation IoU {iou:.3f}" if isinstance(iou, float) and iou == iou else ""
        self.status.value = f"{what} at step {result.get('step')}: model {reg.name!r}{iou_txt}"
        self._refresh_docks()  # the Segment widget now lists the new model
        self.base.reset_choices()
        show_info(f"Training {what}: model {reg.name!r}{iou_txt} is ready in the Segment widget.")

    def _refresh_docks(self):
        for w in list(getattr(self._viewer.window, "dock_widgets", {}).values()):
            if hasattr(w, "reset_choices"):
                w.reset_choices()

    def _gen_returned(self, result):
        what = "stopped early" if result.get("stopped") else "finished"
        reg = result.get("registered")
        if reg is None:
            self.status.value = f"{what} in the {result.get('stage')} stage: no usable generator yet"
            show_info(f"Generator training {what} before the denoiser had a checkpoint: nothing registered "
                      f"(partial files in {result.get('path')}).")
            return
        self.status.value = f"{what}: generator {reg.name!r} (denoiser step {result.get('step')})"
        self._refresh_docks()  # the Generate widget now lists the new generator
        self.gen_base.reset_choices()
        show_info(f"Generator training {what}: {reg.name!r} is ready in the Generate widget.")

    @_if_alive
    def _errored(self, exc):
        self.status.value = f"failed: {exc}"
        if isinstance(exc, ValueError):  # bad input the user can fix: one clear line
            show_error(f"Training failed: {exc}")
        else:  # a bug: a notification with its traceback
            notification_manager.receive_error(type(exc), exc, exc.__traceback__)

    @_if_alive
    def _finished(self):
        self._worker = None
        self._set_running(False)

    def _set_running(self, running: bool):
        for w in (self.start_btn, self.finetune_btn, self.images, self.labels, self.base, self.steps, self.target,
                  self.gen_base, self.vae_steps, self.diffusion_steps):
            w.enabled = not running
        self.stop_btn.enabled = running

    # -- plot -----------------------------------------------------------------------
    def _make_plot(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 2.4), tight_layout=True)
        ax = fig.add_subplot(111)
        ax2 = ax.twinx()
        (self._loss_line,) = ax.plot([], [], color="tab:blue", lw=1)
        (self._iou_line,) = ax2.plot([], [], "o-", color="tab:orange", ms=3)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss", color="tab:blue")
        ax2.set_ylabel("validation IoU", color="tab:orange")
        ax2.set_ylim(0, 1)
        self._ax = ax
        self._canvas = FigureCanvasQTAgg(fig)
        self._canvas.setMinimumHeight(180)
        self.native.layout().addWidget(self._canvas)

    def _draw(self):
        h = self._history
        self._loss_line.set_data(h["step"], h["loss"])
        self._iou_line.set_data(h["vstep"], h["iou"])
        self._ax.relim()
        self._ax.autoscale_view()
        self._iou_line.axes.set_xlim(self._ax.get_xlim())
        self._canvas.draw_idle()
        self._last_draw = time.perf_counter()
