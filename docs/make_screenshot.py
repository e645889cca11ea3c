"""Regenerate docs/screenshot.png: the demo viewer (sample data + docked widgets), headless.

    xvfb-run -s "-screen 0 1600x1000x24" python docs/make_screenshot.py

Under Xvfb the default ``xcb`` Qt platform with a shown window gives a correct canvas
(``offscreen`` gives a black one; see ../shared/MACHINE.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from qtpy.QtWidgets import QApplication

from napari_cellgen.commands.demo import open_demo_viewer

OUT = Path(__file__).resolve().parent / "screenshot.png"


def main() -> int:
    viewer = open_demo_viewer(show=True)
    viewer.window._qt_window.resize(1400, 860)
    viewer.dims.set_current_step(0, 4)
    image = viewer.layers[0]
    viewer.layers.selection.active = image
    for _ in range(5):
        QApplication.processEvents()
    viewer.reset_view()
    viewer.scale_bar.visible = True
    for _ in range(5):
        QApplication.processEvents()
    viewer.screenshot(str(OUT), canvas_only=False)
    viewer.close()
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
