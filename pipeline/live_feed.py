"""Accelerated live replay: one weekly file into the landing zone every interval, as if a week
passed each time (``rollguard data replay --live --every 60s``), into a running stack whose landing
watch picks each file up. Stops after ``weeks`` deliveries, when the log has no more complete weeks,
or as soon as ``stop`` is set (the command sets it on Ctrl-C or SIGTERM)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

from pipeline import feed
from rollguard.settings import Settings

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_interval(text: str) -> float:
    """Seconds in ``text``: a positive number with unit ``ms``, ``s``, ``m`` or ``h`` (``60s``,
    ``1.5m``); a bare number is seconds.

    Raises:
        ValueError: not such a duration, or not positive.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"--every must be a positive duration such as 60s or 2m, not {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def replay_live(
    settings: Settings,
    *,
    every_seconds: float,
    stop: threading.Event,
    weeks: int | None = None,
    path: Path | None = None,
    on_delivery: Callable[[feed.ReplayResult], None] = lambda _: None,
    on_end: Callable[[feed.ReplayResult], None] = lambda _: None,
) -> list[feed.ReplayResult]:
    """Deliver the next weekly file, then one more every ``every_seconds`` seconds.

    Args:
        weeks: most weeks to deliver (None: until the log ends or ``stop`` is set).
        path: a file of the use case's source shape instead of its packaged one.
        on_delivery: called after each delivery with its result.
        on_end: called with the replay that delivered nothing when the feed has no more weeks
            (its ``note`` says why).

    Returns:
        One :class:`pipeline.feed.ReplayResult` per delivery, in order.

    Raises:
        DatasetError: the source log is missing, altered or unparseable.
    """
    results: list[feed.ReplayResult] = []
    while not stop.is_set():
        result = feed.replay(settings, weeks=1, path=path)
        if not result.written and not result.unchanged and not result.conflicts:
            on_end(result)  # the log has no more complete weeks after the feed's position
            break
        results.append(result)
        on_delivery(result)
        if weeks is not None and len(results) >= weeks:
            break
        if stop.wait(every_seconds):
            break
    return results
