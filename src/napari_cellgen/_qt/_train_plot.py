"""The Train dock's plot: training loss and validation IoU against the step, in the viewer's theme."""

from __future__ import annotations

import contextlib
import time

LOSS_COLOR, IOU_COLOR = "#4c9be8", "#f0a030"  # readable on napari's dark and light backgrounds


def theme_colors(viewer) -> dict[str, str]:
    """Background, text and grid colours of the viewer's current napari theme (dark if unknown)."""
    from napari.utils.theme import get_theme

    try:
        theme = get_theme(getattr(viewer, "theme", "dark"))
    except (ValueError, KeyError, TypeError):
        theme = get_theme("dark")
    return {"background": theme.background.as_hex(), "text": theme.text.as_hex(),
            "grid": theme.foreground.as_hex()}


class TrainPlot:
    """A matplotlib canvas with the loss (left axis) and validation IoU (right axis, 0-1).

    Both share the step axis; :meth:`draw` re-fits it to the whole history on every update.
    """

    def __init__(self, viewer, height: int = 104):
        import matplotlib
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        with matplotlib.rc_context({"font.size": 7}):
            fig = Figure(figsize=(4, height / 100), dpi=100, tight_layout=True)
        self.ax = fig.add_subplot(111)
        self.ax2 = self.ax.twinx()
        (self.loss_line,) = self.ax.plot([], [], color=LOSS_COLOR, lw=1)
        (self.iou_line,) = self.ax2.plot([], [], "o-", color=IOU_COLOR, ms=3)
        self.ax.set_xlabel("step", labelpad=1)
        self.ax.set_ylabel("loss", color=LOSS_COLOR)
        self.ax2.set_ylabel("val. IoU", color=IOU_COLOR)
        for ax in (self.ax, self.ax2):
            ax.tick_params(labelsize=7, length=2, pad=1)
            ax.xaxis.label.set_size(7)
            ax.yaxis.label.set_size(7)
        self.ax2.set_ylim(0, 1)
        self.canvas = FigureCanvasQTAgg(fig)
        self.canvas.setMinimumHeight(height)
        self.last_draw = 0.0
        self._viewer = viewer
        self.apply_theme()
        events = getattr(viewer, "events", None)
        if events is not None and hasattr(events, "theme"):
            events.theme.connect(self._on_theme)
            self.canvas.destroyed.connect(lambda *_: events.theme.disconnect(self._on_theme))

    def _on_theme(self, event=None):
        with contextlib.suppress(RuntimeError):  # the canvas was deleted with its dock
            self.apply_theme()

    def apply_theme(self) -> None:
        c = theme_colors(self._viewer)
        fig = self.ax.figure
        fig.set_facecolor(c["background"])
        for ax in (self.ax, self.ax2):
            ax.set_facecolor(c["background"])
            ax.tick_params(colors=c["text"], which="both")
            for spine in ax.spines.values():
                spine.set_color(c["grid"])
        self.ax.xaxis.label.set_color(c["text"])
        self.canvas.draw_idle()

    def set_generator(self, gen: bool) -> None:
        self.ax2.set_visible(not gen)
        self.ax.set_ylabel("VAE / denoiser loss" if gen else "loss", color=LOSS_COLOR)

    def draw(self, history: dict) -> None:
        """Show ``history`` (step, loss, vstep, iou lists); both axes cover all of it."""
        self.loss_line.set_data(history["step"], history["loss"])
        self.iou_line.set_data(history["vstep"], history["iou"])
        for ax in (self.ax, self.ax2):
            ax.relim()
        self.ax.autoscale_view()  # x is shared with ax2 (twinx), so both follow; never set_xlim
        self.ax2.autoscale_view(scaley=False)  # IoU stays 0-1
        self.canvas.draw_idle()
        self.last_draw = time.perf_counter()
