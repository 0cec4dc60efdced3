"""The benchmark's simulated browser tabs come back after a restart as the real browser client does.

bench/loadgen.py re-implements flask_tidings/static/realtime.js's reconnect delays to measure a
reconnect storm; if the script changes and the bench does not, the storm measures another client.
"""

from __future__ import annotations

import re

import pytest

from tests.support.live import ROOT

loadgen = pytest.importorskip("bench.loadgen", reason="the bench's client (picows) is not installed")


def _script() -> str:
    return (ROOT / "flask_tidings" / "static" / "realtime.js").read_text()


def test_the_bench_backs_off_between_the_browser_clients_bounds():
    script = _script()
    min_ms = int(re.search(r"var MIN_DELAY = (\d+);", script).group(1))
    max_ms = int(re.search(r"var MAX_DELAY = (\d+);", script).group(1))
    assert (loadgen.MIN_DELAY, loadgen.MAX_DELAY) == (min_ms / 1000, max_ms / 1000)
    # Full jitter under a cap that doubles per attempt, as the script computes it.
    assert "Math.min(MAX_DELAY, MIN_DELAY * Math.pow(2, this.attempt - 1))" in script


def test_the_bench_comes_back_when_a_restarting_server_says_as_the_browser_does():
    script = _script()
    restart_ms = int(re.search(r"var RESTART_MAX_DELAY = (\d+);", script).group(1))
    assert loadgen.RESTART_MAX_DELAY == restart_ms / 1000
    assert r"/retry in ([0-9]+(?:\.[0-9]+)?)s/" in script
    assert loadgen.told_delay(1001, b"restart; retry in 1.7s") == 1.7
    told_ms = int(re.search(r"var TOLD_MAX_DELAY = (\d+);", script).group(1))
    assert loadgen.TOLD_MAX_DELAY == told_ms / 1000
    assert loadgen.told_delay(1001, b"restart; retry in 95.0s") == loadgen.TOLD_MAX_DELAY
    assert loadgen.told_delay(1001, b"going away") is None
    assert loadgen.told_delay(4008, b"restart; retry in 1.7s") is None


def test_the_bench_comes_back_as_soon_as_the_browser_after_a_restart_or_a_cut_off():
    script = _script()
    soon_ms = int(re.search(r"soon \? Math\.random\(\) \* (\d+)", script).group(1))
    assert loadgen.SOON_DELAY == soon_ms / 1000
    assert "e.code === 1001 || e.code === 4008" in script
