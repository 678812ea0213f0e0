"""The status page's 90-day uptime bars (the page itself: tests/e2e/test_status_page.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from headwater.status.page import UPTIME_DAYS, bars

ARTIFACTS = Path(os.environ.get("HEADWATER_ARTIFACTS", "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_uptime_bars() -> None:
    today = 20_000
    history = {today: {"operational": 3600.0}, today - 1: {"operational": 3000.0,
               "major_outage": 600.0}}  # fmt: skip
    got, total = bars(history, today)
    assert len(got) == UPTIME_DAYS
    assert got[-1].uptime == 1.0 and got[-1].colour == "#2fb36d"
    assert got[-2].uptime == pytest.approx(3000 / 3600) and got[-2].colour == "#d9412b"
    assert got[0].uptime is None and "no data" in got[0].title
    assert total == pytest.approx(6600 / 7200)
