"""The generator half of the Train dock: its job's arguments, progress and result.

:class:`GeneratorTraining` is mixed into :class:`~.train_widget.TrainWidget` (which owns the
widgets); the work is :func:`napari_cellgen.generate.train.train_generator_job`.
"""

from __future__ import annotations

import time
from pathlib import Path

from napari.utils.notifications import show_info

from ._layers import layer_array, pixel_size_of


def _stamp() -> str:
    import datetime as _dt

    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


class GeneratorTraining:
    """Train the VAE + mask-conditioned denoiser of the Generate dock from one image (and labels) layer."""

    def _gen_base_choices(self, _w=None):
        from ..generate.store import list_generators

        return ["scratch", *list_generators()]

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
        acquire = init is not None and self.adapt.value == "acquisition"
        keep_vae = init is not None and bool(self.keep_vae.value)
        tag = "for" if acquire else "ft"
        name = self.name.value.strip() or (f"gen-{_stamp()}" if init is None else f"{Path(init).name}-{tag}-{_stamp()}")
        cfg = GeneratorConfig(vae_steps=0 if keep_vae else int(self.vae_steps.value),
                              diffusion_steps=int(self.diffusion_steps.value), name=name,
                              minutes=None if acquire else float(self.minutes.value) or None,
                              precision=self.precision.value, adapt="acquisition" if acquire else "networks",
                              val_every=max(1, min(250, int(self.diffusion_steps.value) // 10)),
                              notes={"layers": [img.name] + ([lab.name] if lab else [])})
        fresh = bool(self.fresh_denoiser.value) and init is not None and not acquire
        kwargs = {"slices": slices, "init": init, "fresh_denoiser": fresh, "register_as": name}
        if acquire:
            ps = pixel_size_of(img)
            kwargs["pixel_size_nm"] = float(ps[-1]) if ps else None
        total = 1 if acquire else cfg.vae_steps + cfg.diffusion_steps
        return train_generator_job, (data, mask, default_run_dir(name), cfg), kwargs, total

    def _gen_yielded(self, p):
        """Progress of a generator training: VAE steps, then latent encoding, then denoiser steps."""
        info = p.info or {}
        if p.stage in ("prepare", "encode", "sample", "fit"):
            what = {"prepare": "preparing data", "encode": "encoding latents",
                    "sample": "sampling tiles to compare with your images", "fit": "fitting your microscope"}[p.stage]
            self.status.value = f"{what}... {p.done}/{p.total}"
            if p.stage == "sample":
                self.progress.max, self.progress.value = p.total, p.done
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
        if "time_left_s" in info:  # a time budget: the step count is only an upper bound
            eta = min(eta, info["time_left_s"])
        stage = "VAE" if p.stage == "vae" else "denoiser"
        val = info.get("val_loss_cond", info.get("val_loss_uncond"))
        val_txt = f" · val {val:.3f}" if isinstance(val, float) else ""
        self.status.value = (f"{stage} step {p.done}/{p.total} · loss {h['loss'][-1]:.3f}{val_txt} · "
                             f"stage ETA {eta // 60:.0f}:{eta % 60:02.0f}")
        self._plot.draw(self._history)

    def _gen_returned(self, result):
        what = "stopped early" if result.get("stopped") else "finished"
        reg = result.get("registered")
        if reg is None:
            self.status.value = f"{what} in the {result.get('stage')} stage: no usable generator yet"
            show_info(f"Generator training {what} before the denoiser had a checkpoint: nothing registered "
                      f"(partial files in {result.get('path')}).")
            return
        how = ("adapted to your microscope (networks kept)" if result.get("stage") == "fit"
               else f"denoiser step {result.get('step')}")
        self.status.value = f"{what}: generator {reg.name!r} ({how})"
        self._refresh_docks()  # the Generate widget now lists the new generator
        self.gen_base.reset_choices()
        show_info(f"Generator training {what}: {reg.name!r} is ready in the Generate widget.")
