"""Fixtures shared by the widget tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def notes():
    """Every napari notification shown during the test (the real notification manager)."""
    from napari.utils.notifications import notification_manager

    got = []
    notification_manager.notification_ready.connect(got.append)
    yield got
    notification_manager.notification_ready.disconnect(got.append)
