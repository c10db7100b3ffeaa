"""ISO weeks and cutoffs: the calendar every use case shares.

A *cutoff* ``t`` is the Monday 00:00 that starts an ISO week. Landing files carry one ISO week of
records each (``YYYY-Www`` in the file name); a label horizon of ``h`` days after ``t`` needs every ISO
week that overlaps ``[t, t + h)`` ingested (see :func:`horizon_weeks`).
"""

from __future__ import annotations

import re
from datetime import date, timedelta

_WEEK_RE = re.compile(r"(?P<year>\d{4})-W(?P<week>\d{2})")


def week_start(d: date) -> date:
    """Monday of the ISO week containing ``d``."""
    return d - timedelta(days=d.weekday())


def iso_week_label(d: date) -> str:
    """ISO week of ``d`` as ``YYYY-Www`` (e.g. ``1997-W01``)."""
    year, week, _ = d.isocalendar()
    return f"{year}-W{week:02d}"


def parse_iso_week(label: str) -> date:
    """Monday of the ISO week ``YYYY-Www``.

    Raises:
        ValueError: when ``label`` is not an ISO week that exists.
    """
    m = _WEEK_RE.fullmatch(label)
    if not m:
        raise ValueError(f"not an ISO week label (YYYY-Www): {label!r}")
    try:
        return date.fromisocalendar(int(m["year"]), int(m["week"]), 1)
    except ValueError as exc:
        raise ValueError(f"no such ISO week: {label!r}") from exc


def find_iso_week(text: str) -> str | None:
    """The last ``YYYY-Www`` found in ``text`` (a file name), or None."""
    found = _WEEK_RE.findall(text)
    if not found:
        return None
    year, week = found[-1]
    return f"{year}-W{week}"


def check_cutoff(cutoff: date) -> date:
    """Return ``cutoff`` if it is a Monday.

    Raises:
        ValueError: naming the weekday and the nearest earlier Monday otherwise.
    """
    if cutoff.weekday() != 0:
        raise ValueError(
            f"cutoff {cutoff.isoformat()} is a {cutoff.strftime('%A')}; cutoffs are Mondays "
            f"(the previous one is {week_start(cutoff).isoformat()})"
        )
    return cutoff


def horizon_weeks(cutoff: date, horizon_days: int) -> list[str]:
    """ISO weeks that must be ingested before the label at ``cutoff`` exists."""
    weeks = []
    d = cutoff
    end = cutoff + timedelta(days=horizon_days)
    while d < end:
        label = iso_week_label(d)
        if label not in weeks:
            weeks.append(label)
        d += timedelta(days=1)
    return weeks
