"""Expanding Grafana's template variables in dashboard queries, so tests can run the exact query
text of the committed dashboards against Prometheus and the monitoring store.

Grafana replaces, before a query leaves the browser:
- built-in interval variables (``$__rate_interval``, ``$__interval``, ``$__range``): here fixed
  durations chosen for a Prometheus that scrapes every second and holds a few minutes of data
  (:data:`PROM_INTERVALS`);
- query variables: for Prometheus, a multi-value or "All" selection becomes a regex alternation of
  the regex-escaped values ``(a|b)`` (a single value is inserted as is, escaped); for the SQL
  datasources a multi-value selection becomes a comma-separated list of single-quoted values
  ``'a','b'`` and a single-value variable is inserted raw (so the SQL text quotes it itself,
  ``'$model'``). This mirrors Grafana's documented formatting of variables per datasource.
"""

from __future__ import annotations

import re
from typing import Any

#: Built-in interval variables -> the concrete durations the tests use (scrape interval 1 s).
PROM_INTERVALS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}

_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def variable_kinds(doc: dict[str, Any]) -> dict[str, bool]:
    """``{variable name: multi-value or include-all}`` of a dashboard's query variables."""
    return {
        v["name"]: bool(v.get("multi") or v.get("includeAll"))
        for v in doc.get("templating", {}).get("list", [])
    }


def _replace(text: str, values: dict[str, list[str]], multi: dict[str, bool], fmt: Any) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for template variable ${name} in {text!r}")
        return fmt(values[name], multi.get(name, False))

    return _VAR.sub(sub, text)


def expand_promql(text: str, values: dict[str, list[str]], multi: dict[str, bool]) -> str:
    """PromQL with interval variables and query variables replaced (see the module docstring).

    Raises:
        KeyError: the text uses a variable that has no value.
    """
    for name, duration in PROM_INTERVALS.items():
        text = text.replace(name, duration)

    def fmt(vals: list[str], is_multi: bool) -> str:
        escaped = [re.escape(v) for v in vals]
        return f"({'|'.join(escaped)})" if is_multi else escaped[0]

    return _replace(text, values, multi, fmt)


def expand_sql(text: str, values: dict[str, list[str]], multi: dict[str, bool]) -> str:
    """SQL with query variables replaced the way Grafana's SQL datasources do.

    Raises:
        KeyError: the text uses a variable that has no value.
    """

    def fmt(vals: list[str], is_multi: bool) -> str:
        if is_multi:
            return ",".join("'" + v.replace("'", "''") + "'" for v in vals)
        return vals[0]

    return _replace(text, values, multi, fmt)


#: The model server's live-signal series of issue 19 (``rollguard_live_score_bucket`` /
#: ``_count`` / ``_sum``, ``rollguard_live_score_psi``, ``rollguard_live_window_rows``,
#: ``rollguard_live_reference_info``, ``rollguard_live_feature_psi`` / ``_missing_share`` /
#: ``_out_of_range_share``); not the guard's store-based ``rollguard_live_quality*``.
LIVE_SERIES = re.compile(r"\brollguard_live_(?:score|window_rows|reference_info|feature_)\w*")


def reads_live_series(text: str) -> bool:
    """Whether a query or rule expression reads one of :data:`LIVE_SERIES` (or uses the
    ``$version`` variable built from them)."""
    return bool(LIVE_SERIES.search(text)) or bool(re.search(r"\$\{?version\b", text))


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)(\s*)(?=-?\d)")


def with_bool(expr: str) -> str:
    """An alert expression with each comparison against a number turned into a ``bool``
    comparison: ``x > 0.5`` becomes ``x > bool 0.5``, which returns 0 or 1 for every series the
    expression reads instead of filtering them out. A rule whose ``bool`` form returns data reads
    series that exist, whether or not it fires right now."""
    return _COMPARISON.sub(lambda m: f"{m.group(1)} bool{m.group(2) or ' '}", expr)


def or_operands(expr: str) -> list[str]:
    """The operands of the top-level ``or`` operators of a PromQL expression (outside brackets
    and strings); ``[expr]`` when there is none. ``a == 1 or b == 1`` returns data when only
    ``a`` exists, so each operand is checked on its own."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif (
            depth == 0
            and expr[i : i + 2] == "or"
            and (i == 0 or expr[i - 1].isspace() or expr[i - 1] == ")")
            and (i + 2 == len(expr) or expr[i + 2].isspace() or expr[i + 2] == "(")
        ):
            parts.append(expr[start:i])
            start = i + 2
            i += 1
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]
