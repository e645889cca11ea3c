"""The "Train" dock widget: train or fine-tune a segmenter, or train a generator, in a thread worker.

All the work is :func:`napari_cellgen.train.loop.train_model` (segmenter) or
:func:`napari_cellgen.generate.train.train_generator_job` (generator); this file only turns
widget values into their arguments and their progress into a bar, a label and a plot.
"""

from __future__ import annotations

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
from napari.utils.notifications import notification_manager, show_error, show_info

from ..train.loop import TRAIN_PRECISIONS
from ._collapse import Advanced
from ._layers import layer_array, pixel_size_of, track_edits, widen
from ._train_generator import GeneratorTraining, _stamp
from ._train_plot import TrainPlot
from ._workers import Job, if_alive
from .interop import BioimageioExport


class _LayerSelect(Select):
    """A Select that is always true: as ``TrainWidget.labels`` it also stands for magicgui's
    ``Container.labels`` flag (show row labels), which an empty Select (``len() == 0``) turned off,
    leaving the dock without any labels when it was opened before a Labels layer existed."""

    def __bool__(self) -> bool:
        return True


class TrainWidget(GeneratorTraining, BioimageioExport, Container):
    """Train a segmenter from scratch or fine-tune one on the layers you corrected."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        import napari

        self._viewer = viewer
        self._job = None  # the running training (a _workers.Job), None when idle
        self._history: dict[str, list] = {"step": [], "loss": [], "vstep": [], "iou": []}
        self._t0 = (0.0, 0)
        img_t, lab_t = napari.layers.Image, napari.layers.Labels
        self.target = ComboBox(label="train", choices=["segmenter", "generator"], value="segmenter",
                               tooltip="segmenter: the U-Net; generator: the VAE + mask-conditioned "
                                       "diffusion model of the Generate dock (first image layer and its labels)")
        self.images = Select(label="image layer(s)", choices=self._layer_choices(img_t))
        self.labels = _LayerSelect(label="labels layer(s)", choices=self._layer_choices(lab_t),
                             tooltip="your masks/corrections, one per image layer, same shape")
        self.slices = LineEdit(label="slices", value="",
                               tooltip="e.g. 0-9,40; empty = the slices you painted, else all labelled")
        self.base = ComboBox(label="start from", choices=self._base_choices)
        self.gen_base = ComboBox(label="start from", choices=self._gen_base_choices, visible=False,
                                 tooltip="scratch, or a generator whose VAE (and denoiser) to continue from")
        self.adapt = ComboBox(
            label="adapt", visible=False, value="acquisition",
            choices=[("to my microscope (networks kept, about 1 min)", "acquisition"),
                     ("the networks (fine-tune within the minutes)", "networks")],
            tooltip="to my microscope: keep the generator and fit your images' pixel size, blur, grey levels and "
                    "noise (and the mask layouts of your labelled slices); the networks: fine-tune its VAE and "
                    "denoiser on your images (cellgen train-generator --adapt)")
        self.keep_vae = CheckBox(text="keep its VAE (train the denoiser only)", value=True, visible=False)
        self.fresh_denoiser = CheckBox(
            text="new denoiser (it must not reuse masks you did not select)", value=False, visible=False)
        self.vae_steps = SpinBox(label="VAE steps", min=1, max=1_000_000, value=3000, visible=False)
        self.diffusion_steps = SpinBox(label="denoiser steps", min=1, max=1_000_000, value=4000, visible=False)
        self.minutes = FloatSpinBox(
            label="minutes", min=0.0, max=100_000.0, step=5.0, value=0.0, visible=False,
            tooltip="wall-clock budget of the whole training (the VAE gets 40 %, none when its VAE is kept; "
                    "the denoiser the rest); the step counts become upper bounds. 0 = use the step counts")
        self.steps = SpinBox(label="steps", min=1, max=100000, value=400)
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
        self.precision = ComboBox(
            label="precision", choices=list(TRAIN_PRECISIONS), value="fp32",
            tooltip="bf16: bfloat16 arithmetic on CPUs with native bfloat16 (AVX512-BF16, AMX): segmenter steps "
                    "about 2x faster, a generator's VAE 1.4x, its denoiser about the same; slower on other CPUs")
        self.finetune_btn = PushButton(text="Fine-tune on my corrections")
        self.start_btn = PushButton(text="Start")
        self.stop_btn = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self._buttons = Container(widgets=[self.finetune_btn, self.start_btn, self.stop_btn], layout="horizontal",
                                  labels=False)
        self._buttons.margins = (0, 0, 0, 0)
        self.extend([self.target, self.images, self.labels, self.base, self.gen_base, self.adapt, self.steps,
                     self.vae_steps, self.diffusion_steps, self.minutes, self.progress, self.status])
        layout = self.native.layout()  # the button row spans the dock, as a single button does
        layout.insertWidget(layout.indexOf(self.progress.native.parent()), self._buttons.native)
        # the rest folds away, so Segment + Train fit a 1000 px screen (issue 14)
        self._advanced = Advanced(self, [self.slices, self.name, self.patch, self.batch, self.lr, self.val_fraction,
                                         self.pool_info, self.synthetic_ratio, self.hard, self.precision, self.keep_vae,
                                         self.fresh_denoiser], before=self._buttons)
        for sel in (self.images, self.labels):
            sel.native.setMaximumHeight(44)
        self.native.layout().setSpacing(4)
        widen(self.base, self.gen_base)
        self._plot = TrainPlot(viewer)
        self.native.layout().addWidget(self._plot.canvas)
        self.finetune_btn.changed.connect(self.finetune_on_corrections)
        self.start_btn.changed.connect(self.start)
        self.stop_btn.changed.connect(self.stop)
        self._add_export()
        self.base.value = self._default_base()
        self.target.changed.connect(self._target_changed)
        self.gen_base.changed.connect(self._target_changed)
        self.keep_vae.changed.connect(self._target_changed)
        self.adapt.changed.connect(self._target_changed)
        from ..train.pool import POOL

        POOL.connect(self._pool_changed)
        self.native.destroyed.connect(lambda *_: POOL.disconnect(self._pool_changed))
        self._pool_changed()
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            ev.connect(self.reset_choices)
        track_edits(viewer)  # the slices painted in each Labels layer (for fine-tuning)

    # the widgets that belong to each kind of training
    _SEG_ONLY = ("base", "steps", "patch", "batch", "lr", "val_fraction", "pool_info", "synthetic_ratio",
                 "hard", "finetune_btn")
    _GEN_ONLY = ("gen_base", "vae_steps", "diffusion_steps", "minutes")

    def _target_changed(self, *_):
        gen = self.target.value == "generator"
        for name in self._SEG_ONLY:
            getattr(self, name).visible = not gen
        for name in self._GEN_ONLY:
            getattr(self, name).visible = gen
        from_gen = gen and self.gen_base.value not in (None, "scratch")
        acquire = from_gen and self.adapt.value == "acquisition"
        self.adapt.visible = from_gen
        self.keep_vae.visible = from_gen and not acquire
        self.fresh_denoiser.visible = from_gen and not acquire
        self.vae_steps.visible = gen and not (from_gen and (self.keep_vae.value or acquire))
        self.diffusion_steps.visible = gen and not acquire
        self.minutes.visible = gen and not acquire
        self._plot.set_generator(gen)
        self._advanced.refit()

    def reset_choices(self, *args):
        super().reset_choices(*args)
        self._advanced.reset_choices()

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
        self._corrections = bool(edited)  # the corrections recipe (train/loop.py corrections_config)
        try:
            self.start()
        finally:
            self._corrections = False

    @staticmethod
    def _auto_name(init: str) -> str:
        return f"mito-{_stamp()}" if init == "scratch" else f"{Path(init).name}-ft-{_stamp()}"

    # -- running ------------------------------------------------------------------
    def _job_args(self):
        from ..io.stack import volume_pixel_size
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
            # empty: the slices painted in this layer, else every labelled one (as the tooltip says,
            # and as the generator panel reads it)
            painted = sorted((lab.metadata or {}).get("cellgen_edited_slices") or []) or None
            pairs.append((data, mask, parse_slices(text, n) if text else painted))
        init = self.base.value
        lr = self.lr.value.strip().lower()
        try:
            lr = default_lr(init) if lr in ("", "auto") else float(lr)
        except ValueError:
            raise DataError(f"learning rate {self.lr.value!r} is not a number (or 'auto')") from None
        info = base_model_info(init)
        name = self.name.value.strip() or self._auto_name(init)
        if getattr(self, "_corrections", False) and len(pairs) == 1 and pairs[0][2]:
            # a few painted slices: no validation, the last weights, the corrections weighted, and
            # (when the model already agreed with them) its own labels elsewhere kept as anchors
            from ..train.loop import correction_data, corrections_config

            cfg = corrections_config(init, name, steps=int(self.steps.value), batch=int(self.batch.value),
                                     patch_px=int(self.patch.value), lr=lr)
            cfg.precision = self.precision.value
            cfg.notes["layers"] = [lyr.name for lyr in labels]
            pairs, self._anchors = correction_data(*pairs[0])
            return pairs, default_run_dir(name), cfg
        self._anchors = None
        cfg = TrainConfig(init=init, steps=int(self.steps.value), batch=int(self.batch.value), lr=lr,
                          patch=patch_at_model_scale(int(self.patch.value), info["scale"], info["depth"]),
                          val_fraction=float(self.val_fraction.value), name=name,
                          val_every=max(1, int(self.steps.value) // 20),
                          synthetic_ratio=float(self.synthetic_ratio.value) if self._synthetic() else 0.0,
                          hard_prob=float(self.hard.value), mine_every=max(1, int(self.steps.value) // 5),
                          precision=self.precision.value, pixel_size_nm=volume_pixel_size(pixel_size_of(images[0])),
                          notes={"base_model": info["name"], "layers": [lyr.name for lyr in labels]})
        return pairs, default_run_dir(name), cfg

    @property
    def _worker(self):  # (the name the tests and older code use)
        return self._job

    def start(self):
        if self._job is not None:
            return
        self._running_target = self.target.value  # what this run trains: decides how its result is read
        try:
            if self._running_target == "generator":
                func, args, kwargs, total = self._gen_job_args()
            else:
                pairs, out_dir, cfg = self._job_args()
                from ..train.loop import train_model

                func, args, total = train_model, (pairs, out_dir, cfg), cfg.steps
                kwargs = {"register_as": cfg.name, "synthetic": self._synthetic(), "anchors": self._anchors}
        except ValueError as exc:
            show_error(f"Cannot train: {exc}")
            return

        self._history = {k: [] for k in self._history}
        self._gen_offset = {}
        self.progress.max, self.progress.value = total, 0
        self.status.value = "preparing data..."
        if self.target.value != "generator":
            self._announce(cfg)
        # Stop is polite: the job closes its training generator in the worker thread (which writes
        # the best checkpoint) and returns normally, so _returned still reports the model
        self._job = Job(func, *args, **kwargs, polite_stop=True, on_progress=self._yielded, on_done=self._returned,
                        on_error=self._errored, on_end=self._finished, start=False)
        self._set_running(True)
        self._job.start()

    def _announce(self, cfg) -> None:
        """Say how long the run will take here, from one measured step, before it starts."""
        from ..train.estimate import describe, seconds_per_step

        try:
            per = seconds_per_step(cfg)
        except Exception:  # noqa: BLE001 - an estimate must never stop a run; the worker reports real errors
            return
        text = (f"{cfg.steps} steps × batch {cfg.batch}: {describe(per * cfg.steps)} on this machine "
                f"({per:.2f} s/step measured); Stop keeps the best model so far")
        self.status.value = f"preparing data... {text}"
        show_info(f"Training {cfg.name!r}: {text}.")

    def stop(self):
        if self._job is not None and self._job.running:
            self._job.cancel()
            self.status.value = "stopping: saving the best model..."

    @if_alive
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
        self._plot.draw(h)  # every update: the axes follow the whole history

    @if_alive
    def _returned(self, result):
        self._plot.draw(self._history)
        if getattr(self, "_running_target", "segmenter") == "generator":
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
        metrics = card.get("metrics") or {}
        kept = (f"kept the best validation checkpoint (step {metrics.get('step')}, from the run's second half)"
                if metrics.get("selection") == "best" else
                f"kept the weights of step {metrics.get('step')}, the last"
                + ("" if iou_txt else " (no validation slices: every painted pixel was trained on)"))
        self.status.value = f"{what} at step {result.get('step')}: model {reg.name!r}{iou_txt}; {kept}"
        self._refresh_docks(select_model=reg.name)  # the Segment dock lists the new model, selected
        self.base.reset_choices()
        self._trained = reg  # what "Export to bioimage.io" exports
        show_info(f"Training {what}: model {reg.name!r}{iou_txt} is selected in the Segment dock.")

    def _refresh_docks(self, select_model: str | None = None):
        for w in list(getattr(self._viewer.window, "dock_widgets", {}).values()):
            if hasattr(w, "reset_choices"):
                w.reset_choices()
            if select_model and hasattr(w, "select_model"):
                w.select_model(select_model)

    @if_alive
    def _errored(self, exc):
        self.status.value = f"failed: {exc}"
        if isinstance(exc, ValueError):  # bad input the user can fix: one clear line
            show_error(f"Training failed: {exc}")
        else:  # a bug: a notification with its traceback
            notification_manager.receive_error(type(exc), exc, exc.__traceback__)

    @if_alive
    def _finished(self, state=None):
        self._job = None
        self._set_running(False)

    def _set_running(self, running: bool):
        for w in (self.start_btn, self.finetune_btn, self.images, self.labels, self.base, self.steps, self.target,
                  self.gen_base, self.adapt, self.vae_steps, self.diffusion_steps, self.minutes, self.slices, self.name,
                  self.patch, self.batch, self.lr, self.val_fraction, self.synthetic_ratio, self.hard, self.precision,
                  self.keep_vae, self.fresh_denoiser):
            w.enabled = not running  # what a run was started with stays on screen as it was
        self.stop_btn.enabled = running
