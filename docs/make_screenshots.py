"""Regenerate the README's screenshots: docs/screenshots/{segment,finetune,generate}.png.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py

(without a display it restarts itself under ``xvfb-run`` when that is installed). It opens a
napari viewer with the sample EM crop, docks the plugin's widgets and runs each workflow of
the README the way a user would, through the docks:

1. segment.png: the Segment dock's **Segment** with the shipped model; the labels over the EM.
2. finetune.png: a correction painted into the result, then the Train dock's **Fine-tune on my
   corrections**, caught while it trains (progress and loss plot), then stopped.
3. generate.png: mitochondria drawn in an empty Labels layer, the Generate dock's **Generate**
   with the shipped generator; the generated EM under the drawn masks.

Under Xvfb the default ``xcb`` Qt platform with a shown window draws the canvas (``offscreen``
gives a black one; see ../shared/MACHINE.md). Models trained here go to a temporary user folder.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

OUT = Path(__file__).resolve().parent / "screenshots"
PLUGIN = "napari-cellgen"
SIZE = (1500, 920)


def _ensure_display() -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            sys.exit("no display: run under Xvfb, e.g. xvfb-run -a python docs/make_screenshots.py")
        os.execv(xvfb, [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv])


def _pump(seconds: float = 0.3) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _wait(condition, timeout: float, what: str) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        _pump(0.1)
        if condition():
            return True
    print(f"make_screenshots: gave up waiting for {what} after {timeout:.0f} s", file=sys.stderr)
    return False


def _show_only(docks: dict, names: tuple[str, ...]) -> None:
    for name, (dock, _) in docks.items():
        dock.setVisible(name in names)
    _pump(0.5)


def _dismiss_notifications(viewer) -> None:
    for w in viewer.window._qt_window.findChildren(object):
        if type(w).__name__ == "NapariQtNotification":
            w.close()


def _shot(viewer, name: str) -> Path:
    path = OUT / name
    _dismiss_notifications(viewer)
    _pump(0.5)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(path)
    return path


def _missed(truth, labels, z):
    """Pixels (rows, cols) of slice ``z`` to paint: the true mitochondrion parts the model missed."""
    import numpy as np
    from skimage.draw import ellipse
    from skimage.measure import label

    if truth is not None:
        missed = label((truth[z] > 0) & (labels[z] == 0))
        sizes = np.bincount(missed.ravel())[1:]
        keep = 1 + np.flatnonzero(sizes >= 30)
        if len(keep):
            return np.nonzero(np.isin(missed, keep))
    h, w = labels.shape[-2:]  # nothing missed: a stand-in stroke
    return ellipse(h // 2, w // 4, 22, 34, shape=(h, w))


def _vivid_id(layer, start: int) -> int:
    """A new label id whose colour stands out (the user's strokes should be visible)."""
    def saturation(i):
        rgba = layer.get_color(i)
        return 0.0 if rgba is None else float(max(rgba[:3]) - min(rgba[:3]))

    return max(range(start, start + 40), key=saturation)


def main() -> int:
    _ensure_display()
    if "CELLGEN_USER_DIR" not in os.environ:  # the fine-tuned model must not land in the user's folder
        tmp = tempfile.mkdtemp(prefix="cellgen-screenshots-")
        os.environ["CELLGEN_USER_DIR"] = tmp
        import atexit

        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    import napari
    import numpy as np
    from skimage.draw import ellipse

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-cellgen", show=True)
    viewer.window._qt_window.resize(*SIZE)
    viewer.open_sample(PLUGIN, "em_mito")
    truth = None
    for layer in list(viewer.layers):  # the sample's ground truth would hide the model's result
        if isinstance(layer, napari.layers.Labels):
            truth = np.asarray(layer.data)
            viewer.layers.remove(layer)
    image = viewer.layers[0]
    viewer.dims.set_current_step(0, 4)
    with warnings.catch_warnings():  # napari 0.9 renamed it (canvas.overlays.scale_bar); both work
        warnings.simplefilter("ignore", DeprecationWarning)
        viewer.scale_bar.visible = True
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)
             for name in ("Segment", "Objects table", "Train", "Generate")}
    from qtpy.QtCore import Qt

    viewer.window._qt_window.resizeDocks([docks["Segment"][0], docks["Objects table"][0]], [360, 480],
                                         Qt.Orientation.Vertical)

    # 1. segment
    _show_only(docks, ("Segment", "Objects table"))
    seg = docks["Segment"][1]
    viewer.layers.selection.active = image
    seg.reset_choices()
    seg.image.value = image
    seg.start()
    name = f"{image.name} mitochondria"
    _wait(lambda: name in viewer.layers and seg.run_btn.enabled, 600, "the segmentation")
    labels = viewer.layers[name]
    viewer.layers.selection.active = labels
    viewer.reset_view()
    _pump(2.0)  # the objects table measures
    _shot(viewer, "segment.png")

    # 2. correct and fine-tune: paint, as the brush does, what the model missed on the shown slice
    z = int(viewer.dims.current_step[0])
    rr, cc = _missed(truth, np.asarray(labels.data), z)
    new_id = _vivid_id(labels, int(np.asarray(labels.data).max()) + 1)
    labels.data_setitem((np.full(rr.shape, z), rr, cc), new_id)
    labels.selected_label = new_id
    # zoom in where the most was painted, as one does to correct
    h, w = np.asarray(labels.data).shape[-2:]
    cy = np.clip(np.median(rr), 0.3 * h, 0.7 * h) * labels.scale[-2]  # the view stays on the image
    cx = np.clip(np.median(cc), 0.3 * w, 0.7 * w) * labels.scale[-1]
    viewer.camera.center = (float(cy), float(cx))
    viewer.camera.zoom *= 2.0
    labels.mode = "paint"
    _show_only(docks, ("Train",))
    train = docks["Train"][1]
    viewer.layers.selection.active = labels
    train.finetune_on_corrections()
    _wait(lambda: "loss" in str(train.status.value) and "step" in str(train.status.value), 300,
          "the first training steps")
    _pump(20.0)  # a few more steps: the loss plot fills in
    _shot(viewer, "finetune.png")
    train.stop()
    _wait(lambda: train.start_btn.enabled, 300, "the fine-tuning to stop")
    labels.mode = "pan_zoom"

    # 3. generate: draw three mitochondria in an empty 256 x 256 Labels layer
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    drawing = np.zeros((256, 256), np.uint32)
    for i, (y, x, a, b) in enumerate(((70, 80, 28, 45), (170, 60, 22, 30), (150, 185, 40, 26)), start=1):
        rr, cc = ellipse(y, x, a, b, shape=drawing.shape, rotation=0.4 * i)
        drawing[rr, cc] = i
    masks = viewer.add_labels(drawing, name="my mitochondria", scale=image.scale[-2:], units=image.units[-2:],
                              opacity=0.35)
    _show_only(docks, ("Generate",))
    gen = docks["Generate"][1]
    gen.reset_choices()
    gen.labels.value = masks
    gen.mode.value = "from Labels layer"
    gen.n.value = 2
    gen.start()
    _wait(lambda: any(ly.name.startswith("generated (") for ly in viewer.layers) and gen.run_btn.enabled, 600,
          "the generated images")
    masks.contour, masks.opacity = 2, 0.8
    for layer in viewer.layers:
        if layer.name.endswith(" masks"):  # the generated masks repeat the drawing
            layer.visible = False
    viewer.layers.move(viewer.layers.index(masks), len(viewer.layers))  # the drawing on top, as outlines
    viewer.layers.selection.active = masks
    viewer.reset_view()
    _shot(viewer, "generate.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
