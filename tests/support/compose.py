"""Reading docker-compose.yml the way Docker Compose does, without a Docker engine.

:func:`interpolate` implements the Compose Specification's interpolation syntax
(https://github.com/compose-spec/compose-spec/blob/main/12-interpolation.md): ``$$`` is a literal
``$``; ``${VAR}`` and ``$VAR``; ``${VAR:-default}`` / ``${VAR-default}`` (default when unset or
empty / when unset); ``${VAR:?message}`` / ``${VAR?message}`` (error when unset or empty / unset);
``${VAR:+alt}`` / ``${VAR+alt}``. Defaults may themselves hold interpolations. YAML merge keys
(``<<``) are resolved by PyYAML's safe loader, as Compose resolves them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
#: Every variable a text refers to: ``${NAME...}`` or ``$NAME`` (not ``$$``).
VARIABLE = re.compile(rf"(?<!\$)\$(?:\{{({_NAME})|({_NAME}))")


class MissingVariable(ValueError):
    """A required variable (``${VAR:?msg}`` / ``${VAR?msg}``) is unset; ``str()`` is the message."""


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as written (merge keys resolved, nothing interpolated)."""
    return yaml.safe_load(path.read_text())


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped; no quoting rules)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            env[name.strip()] = value
    return env


def referenced_variables(text: str) -> set[str]:
    """Names of the variables ``text`` interpolates."""
    return {a or b for a, b in VARIABLE.findall(text)}


def _parse_braced(text: str, start: int) -> tuple[str, int]:
    """The body of ``${...}`` starting after ``${`` at ``start`` (nested braces balanced)."""
    depth, i = 1, start
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i], i + 1
        i += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def interpolate_str(text: str, env: dict[str, str]) -> str:
    """One string interpolated with ``env``.

    Raises:
        MissingVariable: a required variable is unset (or empty, for ``:?``).
        ValueError: malformed syntax.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            body, i = _parse_braced(text, i + 2)
            out.append(_expand(body, env))
        elif re.match(_NAME, text[i + 1 :]):
            name = re.match(_NAME, text[i + 1 :]).group(0)  # type: ignore[union-attr]
            out.append(env.get(name, ""))
            i += 1 + len(name)
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _expand(body: str, env: dict[str, str]) -> str:
    match = re.match(rf"({_NAME})(:?[-?+])?(.*)\Z", body, re.DOTALL)
    if match is None:
        raise ValueError(f"invalid interpolation ${{{body}}}")
    name, op, arg = match.groups()
    value = env.get(name)
    unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
    if op is None:
        return value or ""
    if op.endswith("-"):
        return interpolate_str(arg, env) if unset_or_empty else value  # type: ignore[return-value]
    if op.endswith("?"):
        if unset_or_empty:
            raise MissingVariable(f"{name}: {interpolate_str(arg, env)}")
        return value  # type: ignore[return-value]
    # "+": the alternative when set
    return "" if unset_or_empty else interpolate_str(arg, env)


def interpolate(obj: Any, env: dict[str, str]) -> Any:
    """``obj`` (parsed YAML) with every string value interpolated; keys are left as written."""
    if isinstance(obj, str):
        return interpolate_str(obj, env)
    if isinstance(obj, list):
        return [interpolate(v, env) for v in obj]
    if isinstance(obj, dict):
        return {k: interpolate(v, env) for k, v in obj.items()}
    return obj


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a dict (the list form ``NAME=value`` too)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of a service's bind mounts (short and long volume syntax)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
            if source.startswith((".", "/", "~")):
                mounts.append((source, target))
        elif volume.get("type") == "bind":
            mounts.append((volume["source"], volume["target"]))
    return mounts


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of a service's published ports (interpolated file)."""
    result = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            result.append(
                (str(port.get("host_ip", "0.0.0.0")), int(port["published"]), int(port["target"]))
            )
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            result.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            result.append(("0.0.0.0", int(parts[0]), int(parts[1])))
        else:
            raise ValueError(f"port {port!r} is not published on a fixed host port")
    return result


DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def section_table(heading: str, path: Path = DEPLOY_DOC) -> list[dict[str, str]]:
    """The first Markdown table under the ``## heading`` (or ``###``) of ``path``: one dict per
    row, keyed by the header cells; backticks are stripped from cells.

    Raises:
        ValueError: no such heading, or no table under it before the next heading.
    """
    lines = path.read_text().splitlines()
    pattern = re.compile(rf"^#{{2,3}} {re.escape(heading)}\s*$")
    starts = [i for i, line in enumerate(lines) if pattern.match(line)]
    if not starts:
        raise ValueError(f"{path.name} has no heading {heading!r}")
    rows: list[list[str]] = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip().replace("`", "") for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    if len(rows) < 3:
        raise ValueError(f"{path.name}, {heading!r}: no table")
    header, body = rows[0], rows[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


def versions_table(path: Path = DEPLOY_DOC) -> dict[str, dict[str, str]]:
    """docs/deploy.md, "Versions": per component, ``image`` (the tag the stack ships) and
    ``tests`` (the version the tests run)."""
    return {row["component"]: row for row in section_table("Versions", path)}
