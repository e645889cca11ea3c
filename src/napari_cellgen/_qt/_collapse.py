"""A collapsed "Advanced options" section for the magicgui dock widgets (superqt's QCollapsible).

Docks show their basic options; the rest fold away, as in micro-sam's and empanada's docks, so
that Segment and Train open together fit a 1000 px high screen (each dock's height <= 450 px).
"""

from __future__ import annotations

from magicgui.widgets import Container

MAX_DOCK_HEIGHT = 450  # px: two docks + title bars fit a 1000 px screen (issue 14)


class Advanced:
    """``widgets`` moved into a collapsed section of ``container``, placed before ``before``."""

    def __init__(self, container: Container, widgets, *, before=None, title: str = "Advanced options"):
        from superqt import QCollapsible

        self.inner = Container(widgets=list(widgets), labels=True)
        self.inner.margins = (0, 0, 0, 0)
        self.section = QCollapsible(title)
        self.section.setDuration(0)
        self.section.addWidget(self.inner.native)
        self.section.layout().setContentsMargins(0, 0, 0, 0)
        self.section.content().layout().setContentsMargins(0, 0, 0, 0)
        self.section.collapse(animate=False)
        layout = container.native.layout()
        layout.insertWidget(_row_of(layout, before.native) if before is not None else layout.count(), self.section)

    def reset_choices(self) -> None:
        self.inner.reset_choices()

    def refit(self) -> None:
        """Re-measure the open section after widgets in it were shown or hidden."""
        if self.section.isExpanded():
            self.section.expand(animate=False)

    def expand(self) -> None:
        self.section.expand(animate=False)


def _row_of(layout, native) -> int:
    """Index of the layout item holding ``native`` (itself or the label row around it)."""
    for i in range(layout.count()):
        w = layout.itemAt(i).widget()
        if w is not None and (w is native or w.isAncestorOf(native)):
            return i
    return layout.count()
