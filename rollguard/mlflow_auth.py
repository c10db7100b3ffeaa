"""Rollguard's MLflow server app ``rollguard-auth``: MLflow's basic-auth app plus one rule, only
``gate``, ``guard`` and MLflow admins may move or remove the ``champion`` alias.

MLflow's basic-auth app grants per registered model (READ, USE, EDIT, MANAGE); it cannot tell
alias names apart. ``SetRegisteredModelAlias`` needs EDIT on the model, so the ``pipeline``
identity, which must set ``challenger``, could set ``champion`` as well. This app closes that gap
with one Flask ``before_request`` hook that runs after basic-auth has authenticated and
authorized the request:

- ``POST``/``DELETE`` ``.../mlflow/registered-models/alias`` with alias ``champion``;
- ``DELETE .../mlflow/model-versions/delete`` of the version that holds ``champion``;
- ``DELETE .../mlflow/registered-models/delete`` of a model that has a ``champion``;
- ``POST .../mlflow/registered-models/rename`` of a model that has a ``champion`` (the served
  name would have no champion any more);

(REST ``/api/2.0`` and the web UI's ``/ajax-api/2.0`` twin) are answered ``403`` with a JSON
body in MLflow's error shape (``{"error_code": "PERMISSION_DENIED", "message": ...}``) unless
the authenticated user is one of :data:`CHAMPION_MOVERS` or an MLflow admin. Unauthenticated
requests never get here: basic-auth answers them ``401``.

Served with ``mlflow server --app-name rollguard-auth`` (entry point ``mlflow.app`` in
pyproject.toml); configured like basic-auth (``MLFLOW_AUTH_CONFIG_PATH``,
``MLFLOW_FLASK_SERVER_SECRET_KEY``). See docs/security.md, "Registry access control".
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

#: The serving alias this app protects (the same name as ``registry_guard.registry.CHAMPION``,
#: which this core module cannot import).
CHAMPION = "champion"
#: MLflow users that may move or remove ``champion`` besides admins: Rollguard's gate (the
#: pipeline's gate task, ``rollguard gate``) and guard (rollbacks), through the compare-and-set
#: function ``registry_guard.registry.move_champion`` / ``rollback``.
CHAMPION_MOVERS: frozenset[str] = frozenset({"gate", "guard"})

_API = r"(?:/.*)?/(?:ajax-)?api/2\.0/mlflow"
_ALIAS = re.compile(_API + r"/registered-models/alias")
_DELETE_VERSION = re.compile(_API + r"/model-versions/delete")
_DELETE_MODEL = re.compile(_API + r"/registered-models/delete")
_RENAME_MODEL = re.compile(_API + r"/registered-models/rename")


def _params() -> dict[str, Any]:
    """The request's parameters: query string and JSON body merged (MLflow's handlers read one or
    the other depending on method and content type; checking both leaves no way around)."""
    from flask import request

    # force=True: MLflow's handlers read the body whatever its Content-Type, so a DELETE with a
    # text/plain or absent Content-Type is honoured and must be checked the same way.
    body = request.get_json(force=True, silent=True)
    return {**request.args.to_dict(), **(body if isinstance(body, dict) else {})}


def _protected_target() -> str | None:
    """What the request would do to ``champion`` (a sentence), or None when it does not touch it.

    A version or model that does not exist is left to MLflow's own handler (its 404).
    """
    from flask import request

    if request.method not in ("POST", "DELETE"):
        return None
    path = request.path
    if _ALIAS.fullmatch(path):
        params = _params()
        if str(params.get("alias", "")).strip().lower() != CHAMPION:
            return None
        verb = "set" if request.method == "POST" else "delete"
        return f"{verb} alias {CHAMPION!r} of registered model {params.get('name')!r}"
    from mlflow.server.handlers import _get_model_registry_store

    if request.method == "POST" and _RENAME_MODEL.fullmatch(path):
        name = _params().get("name")
        if name and CHAMPION in (_model_aliases(_get_model_registry_store(), str(name)) or {}):
            return f"rename registered model {name!r}, which has alias {CHAMPION!r}"
        return None
    if request.method != "DELETE":
        return None

    if _DELETE_VERSION.fullmatch(path):
        params = _params()
        name, version = params.get("name"), params.get("version")
        if not name or not version:
            return None
        try:
            aliases = _get_model_registry_store().get_model_version(name, str(version)).aliases
        except Exception:  # noqa: BLE001 - missing version: MLflow's handler answers 404
            return None
        if CHAMPION in (aliases or []):
            return f"delete version {version} of {name!r}, which holds alias {CHAMPION!r}"
        return None
    if _DELETE_MODEL.fullmatch(path):
        name = _params().get("name")
        if name and CHAMPION in (_model_aliases(_get_model_registry_store(), str(name)) or {}):
            return f"delete registered model {name!r}, which has alias {CHAMPION!r}"
    return None


def _model_aliases(store: Any, name: str) -> Any:
    """The aliases of registered model ``name`` (alias → version), None when it does not exist
    (MLflow's own handler then answers 404)."""
    try:
        return store.get_registered_model(name).aliases
    except Exception:  # noqa: BLE001 - missing model
        return None


def may_move_champion(username: str, *, is_admin: bool) -> bool:
    """True for :data:`CHAMPION_MOVERS` and MLflow admins (pure)."""
    return is_admin or username in CHAMPION_MOVERS


def guard_champion() -> Any:
    """Flask ``before_request`` hook: None to let the request through, or a 403 response.

    Registered after basic-auth's own hook, so the request is authenticated (and authorized for
    the model) when this runs.
    """
    from flask import jsonify, request
    from mlflow.server.auth import store

    target = _protected_target()
    if target is None:
        return None
    auth = request.authorization
    username = auth.username if auth is not None else None
    if username is None:
        return None  # basic-auth has already answered 401; never reached in practice
    if may_move_champion(username, is_admin=store.get_user(username).is_admin):
        return None
    log.warning("refused MLflow user %r: %s", username, target)
    response = jsonify(
        error_code="PERMISSION_DENIED",
        message=(
            f"Rollguard: user {username!r} may not {target}; only the gate, the guard "
            f"({', '.join(sorted(CHAMPION_MOVERS))}) and MLflow admins move {CHAMPION!r} "
            "(use `rollguard promote` / `rollguard rollback`)"
        ),
    )
    response.status_code = 403
    return response


def create_app() -> Any:
    """The MLflow server app: basic-auth (``mlflow.server.auth.create_app``) on MLflow's Flask app,
    plus :func:`guard_champion`. Returns what basic-auth returns (the FastAPI wrapper under
    uvicorn, the Flask app under gunicorn/waitress); either way the Flask hooks serve the
    registry's REST routes.
    """
    import tempfile
    from pathlib import Path

    from filelock import FileLock
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as basic_auth_app

    # ``mlflow server`` creates the user store and the admin before it starts the workers only
    # for its own app name (``basic-auth``); for this one each worker does it in create_app.
    # Serialize the workers of this host, so two of them never migrate one SQLite store at once.
    with FileLock(Path(tempfile.gettempdir()) / "rollguard-mlflow-auth.lock", timeout=300):
        served = basic_auth_app(flask_app)
    flask_app.before_request(guard_champion)
    return served


# --- provisioning the identities (``rollguard stack mlflow-users``) ------------------------------

#: The MLflow users Rollguard's processes authenticate as (docs/security.md).
USERS: tuple[str, ...] = ("pipeline", "gate", "guard", "reader")

#: Grants of each user, per resource type, on every resource (pattern ``*``), with the server's
#: ``default_permission = NO_PERMISSIONS``. Deleting an alias needs MANAGE on the model (the gate
#: and the guard undo a half-done move by deleting ``champion``); the pipeline sets
#: ``challenger`` with EDIT (and holds MANAGE on a model it created itself, as MLflow grants to a
#: creator); the ``champion`` rule of :func:`guard_champion` applies on top of all of these.
GRANTS: dict[str, dict[str, str]] = {
    "pipeline": {"experiment": "EDIT", "registered_model": "EDIT"},
    "gate": {"experiment": "EDIT", "registered_model": "MANAGE"},
    "guard": {"experiment": "EDIT", "registered_model": "MANAGE"},
    "reader": {"experiment": "READ", "registered_model": "READ"},
}


def _read_secret(path: Any) -> str:
    from pathlib import Path

    from rollguard.errors import ConfigurationError

    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(
            f"secret file {path} cannot be read ({exc.strerror or exc})"
        ) from exc
    if not value:
        raise ConfigurationError(f"secret file {path} is empty (`make env` fills it)")
    return value


def _check(response: Any, what: str) -> Any:
    """The JSON body of a 2xx answer, else a ConfigurationError naming ``what`` and MLflow's words."""
    from rollguard.errors import ConfigurationError

    if response.is_success:
        return response.json() if response.content else {}
    try:
        detail = response.json().get("message") or response.text
    except ValueError:
        detail = response.text
    raise ConfigurationError(
        f"MLflow refused to {what}: HTTP {response.status_code} {detail[:300]}"
    )


def _error_code(response: Any) -> str | None:
    try:
        return response.json().get("error_code")
    except ValueError:
        return None


def provision_users(
    tracking_uri: str,
    *,
    admin_username: str,
    admin_password: str,
    passwords: dict[str, str],
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Create or update the MLflow users of ``passwords`` (name → password) and their
    :data:`GRANTS`, as ``admin_username``, on the authenticated server at ``tracking_uri``
    (basic-auth's REST API over httpx: ``users/get|create|update-password`` and the 3.0
    ``users/permissions/get|grant|revoke``). Idempotent: an existing user gets the given password
    (so re-running after changing a secret rotates it), a grant that differs is replaced, one that
    matches is left alone.

    Returns:
        One row per user: ``{"user", "created" (bool), "grants": {resource_type: permission}}``.

    Raises:
        rollguard.errors.ConfigurationError: a user without a :data:`GRANTS` entry; the server is
            unreachable, refuses the admin's credentials, or the admin is not an admin; any other
            refusal (with MLflow's message).
    """
    import httpx

    from rollguard.errors import ConfigurationError

    unknown = sorted(set(passwords) - set(GRANTS))
    if unknown:
        raise ConfigurationError(f"no MLflow grants defined for user(s) {unknown}")
    base = tracking_uri.rstrip("/")
    v2, v3 = f"{base}/api/2.0/mlflow/users", f"{base}/api/3.0/mlflow/users/permissions"
    rows: list[dict[str, Any]] = []
    with httpx.Client(auth=(admin_username, admin_password), timeout=timeout) as http:
        try:
            me = http.get(f"{v2}/get", params={"username": admin_username})
        except httpx.HTTPError as exc:
            raise ConfigurationError(f"MLflow at {base} is unreachable: {exc}") from exc
        if not _check(me, f"authenticate admin {admin_username!r}")["user"].get("is_admin"):
            raise ConfigurationError(f"MLflow user {admin_username!r} is not an admin")
        for user, password in passwords.items():
            found = http.get(f"{v2}/get", params={"username": user})
            if found.status_code == 404 or _error_code(found) == "RESOURCE_DOES_NOT_EXIST":
                body = {"username": user, "password": password}
                _check(http.post(f"{v2}/create", json=body), f"create user {user!r}")
                created = True
            else:
                _check(found, f"read user {user!r}")
                body = {"username": user, "password": password}
                _check(http.patch(f"{v2}/update-password", json=body), f"update {user!r}")
                created = False
            for resource_type, permission in GRANTS[user].items():
                key = {"username": user, "resource_type": resource_type, "resource_id": "*"}
                current = _check(http.get(f"{v3}/get", params=key), f"read {user!r}'s grants")
                if current.get("permission") == permission:
                    continue
                grant = http.post(f"{v3}/grant", json={**key, "permission": permission})
                if _error_code(grant) == "RESOURCE_ALREADY_EXISTS":
                    _check(http.post(f"{v3}/revoke", json=key), f"revoke {user!r}'s grant")
                    grant = http.post(f"{v3}/grant", json={**key, "permission": permission})
                _check(grant, f"grant {permission} on {resource_type} to {user!r}")
            rows.append({"user": user, "created": created, "grants": dict(GRANTS[user])})
    return rows


def provision_from_files(
    tracking_uri: str, *, admin_username: str, secrets_dir: Any, users: tuple[str, ...] = USERS
) -> list[dict[str, Any]]:
    """:func:`provision_users` with the passwords read from ``secrets_dir``: the admin's from
    ``mlflow_admin_password``, each user's from ``mlflow_<user>_password`` (whitespace stripped).

    Raises:
        rollguard.errors.ConfigurationError: a file is missing or empty; see also
            :func:`provision_users`.
    """
    from pathlib import Path

    root = Path(secrets_dir)
    return provision_users(
        tracking_uri,
        admin_username=admin_username,
        admin_password=_read_secret(root / "mlflow_admin_password"),
        passwords={u: _read_secret(root / f"mlflow_{u}_password") for u in users},
    )
