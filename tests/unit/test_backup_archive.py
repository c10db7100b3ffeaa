"""Archives that ``rollguard restore`` must refuse before it writes anything, and what
``rollguard backup`` takes from a home whose folders are symbolic links (rollguard/backup.py;
docs/operations.md, "Backup and restore"). Real archives on real files, no replay needed."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from rollguard.backup import BackupError, create_backup, restore_backup
from rollguard.settings import Settings

pytestmark = pytest.mark.usefixtures("embedded_environment")


def _settings(home: Path) -> Settings:
    return Settings(home=home, env="test", _env_file=None)  # type: ignore[call-arg]


def _home(tmp_path: Path) -> Path:
    """A home with a (blank) SQLite monitoring store and a warehouse on "another volume"."""
    home = tmp_path / "home"
    home.mkdir()
    with sqlite3.connect(home / "monitoring.db") as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    volume = tmp_path / "volume" / "warehouse"
    (volume / "records").mkdir(parents=True)
    (volume / "records" / "week.parquet").write_bytes(b"rows")
    (home / "warehouse").symlink_to(volume, target_is_directory=True)
    (volume / "loop").symlink_to(home, target_is_directory=True)  # a link back: walked once
    return home


def _archive(path: Path, manifest: dict, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def _manifest(**changes: object) -> dict:
    base = {
        "format": 1,
        "home": "/srv/rollguard",
        "schema_revision": None,
        "files": {"home/a": {"sha256": "0" * 64, "bytes": 1}},
        "databases": {"mlflow": {"engine": "server", "member": None}},
    }
    return {**base, **changes}


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def test_backup_follows_a_symlinked_folder_once(tmp_path: Path) -> None:
    home = _home(tmp_path)
    result = create_backup(_settings(home), tmp_path / "b.tar.gz")
    names = set(result.manifest["files"])
    assert "home/warehouse/records/week.parquet" in names
    assert not any("loop" in n for n in names)


def test_restore_refuses_link_members(tmp_path: Path) -> None:
    link = tarfile.TarInfo("home/mlflow.db")
    link.type, link.linkname = tarfile.SYMTYPE, "../victim/mlflow.db"
    archive = _archive(tmp_path / "a.tar.gz", _manifest(), [_file("home/a"), link])
    target = tmp_path / "target"
    with pytest.raises(BackupError, match="link or special file"):
        restore_backup(archive, _settings(target))
    assert not target.exists()


@pytest.mark.parametrize(
    "manifest,field",
    [
        (_manifest(files={"home/a": {"bytes": 1}}), "files.home/a.sha256"),
        (_manifest(databases="x"), "databases"),
        (_manifest(home=42), "home"),
        (
            _manifest(databases={"optuna": {"engine": "sqlite", "member": "/etc/passwd"}}),
            "databases.optuna.member",
        ),
    ],
)
def test_restore_refuses_a_malformed_manifest_in_words(
    tmp_path: Path, manifest: dict, field: str
) -> None:
    archive = _archive(tmp_path / "a.tar.gz", manifest, [_file("home/a")])
    with pytest.raises(BackupError, match="manifest.json field") as info:
        restore_backup(archive, _settings(tmp_path / "target"))
    assert field.split(".")[0] in str(info.value)
    assert "\n" not in str(info.value)


def test_restore_into_a_folder_inside_the_original_writes_nothing(tmp_path: Path) -> None:
    home = _home(tmp_path)
    archive = create_backup(_settings(home), tmp_path / "b.tar.gz").archive
    before = sorted(p.name for p in home.iterdir())
    with pytest.raises(BackupError, match="one lies inside the other"):
        restore_backup(archive, _settings(home / "sub"))
    assert sorted(p.name for p in home.iterdir()) == before


def test_backup_of_a_folder_without_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match="has no monitoring store"):
        create_backup(_settings(tmp_path / "empty"), tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()
