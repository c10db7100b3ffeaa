"""The CDNOW master purchase log: locate it, verify it, parse it to typed columns.

Source: the CDNOW master file (Fader & Hardie, "CDNOW data set", 69,659 purchases by 23,570 customers,
1997-01-01 to 1998-06-30) as shipped inside the ``Lifetimes`` 0.11.3 distribution on PyPI at
``lifetimes/datasets/CDNOW_master.txt``. The file is found through the installed distribution's file
list (``importlib.metadata``); the package itself is never imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from rollguard.errors import DatasetError
from rollguard.files import sha256_file

DISTRIBUTION = "lifetimes"
DISTRIBUTION_VERSION = "0.11.3"
MASTER_FILE = "lifetimes/datasets/CDNOW_master.txt"
MASTER_SHA256 = "eff6889ed364c5199d6eacbbeb7a6d559971df4406ac876f322c373f00a072ef"
HEADER = ("customer_id", "date", "number_of_cds", "dollar_value")
#: How the packaged copy is named in provenance (``rollguard data info``, lineage tags).
PACKAGED_SOURCE = f"{DISTRIBUTION}=={DISTRIBUTION_VERSION}:{MASTER_FILE}"

#: Columns and dtypes of a parsed transaction log (one row per purchase).
TRANSACTION_DTYPES = {
    "transaction_id": "int64",  # 1-based line number of the purchase in the source file
    "customer_id": "int64",
    "date": "datetime64[ns]",  # day of purchase
    "number_of_cds": "int64",
    "dollar_value": "float64",  # USD
}


@dataclass(frozen=True)
class DatasetInfo:
    """Summary of a parsed transaction log (what ``rollguard data info`` prints)."""

    path: str
    sha256: str
    n_transactions: int
    n_customers: int
    first_date: str
    last_date: str
    total_dollar_value: float
    source: str


def locate_master_file() -> Path:
    """Path of ``CDNOW_master.txt`` inside the installed Lifetimes distribution.

    Raises:
        DatasetError: when Lifetimes is not installed, is another version, or its file list lacks
            the master file.
    """
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise DatasetError(
            MASTER_FILE,
            f"the {DISTRIBUTION}=={DISTRIBUTION_VERSION} distribution is not installed; run "
            "`uv sync` (pipeline group) or pass --path / ROLLGUARD_DATASET_PATH",
        ) from exc
    if dist.version != DISTRIBUTION_VERSION:
        raise DatasetError(
            MASTER_FILE,
            f"found {DISTRIBUTION} {dist.version}, expected {DISTRIBUTION_VERSION}",
        )
    for entry in dist.files or []:
        if entry.as_posix() == MASTER_FILE:
            return Path(str(dist.locate_file(entry)))
    raise DatasetError(MASTER_FILE, f"not listed in the files of {DISTRIBUTION} {dist.version}")


def resolve_dataset(
    path: Path | None = None, expected_sha256: str | None = None
) -> tuple[Path, str]:
    """Pick the transaction log to use and verify it.

    Args:
        path: a user-given CDNOW-shaped file; None means the copy in Lifetimes 0.11.3.
        expected_sha256: checksum the file must have (``ROLLGUARD_DATASET_SHA256``), whichever
            file is used; the packaged file must also match :data:`MASTER_SHA256`.

    Returns:
        ``(path, sha256)`` of the verified file.

    Raises:
        DatasetError: the file is missing, unreadable, or its checksum differs.
    """
    if path is None:
        path, expected = locate_master_file(), MASTER_SHA256
        if expected_sha256 is not None and expected_sha256.lower() != MASTER_SHA256:
            raise DatasetError(
                path,
                f"ROLLGUARD_DATASET_SHA256 is {expected_sha256.lower()}, but the packaged CDNOW "
                f"file's checksum is {MASTER_SHA256}; unset it or point ROLLGUARD_DATASET_PATH "
                "at your own file",
            )
    else:
        expected = expected_sha256
    if not path.exists():
        raise DatasetError(path, "file not found")
    if not path.is_file():
        raise DatasetError(path, "not a regular file")
    actual = sha256_file(path)
    if expected is not None and actual != expected.lower():
        raise DatasetError(
            path,
            f"SHA-256 mismatch: expected {expected.lower()}, found {actual}; the file is altered",
        )
    return path, actual


def parse_transactions(path: Path) -> pd.DataFrame:
    """Parse a CDNOW-shaped log: a header, then ``customer_id YYYYMMDD number_of_cds dollar_value``
    separated by white space.

    Returns:
        One row per purchase with the columns and dtypes of :data:`TRANSACTION_DTYPES`.

    Raises:
        DatasetError: naming the file, the 1-based line and the problem, at the first bad line.
    """
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DatasetError(
            path, f"not ASCII text (byte 0x{exc.object[exc.start]:02x})", line
        ) from exc
    except OSError as exc:
        raise DatasetError(path, f"cannot read: {exc.strerror}") from exc
    lines = text.splitlines()
    if not lines:
        raise DatasetError(path, "empty file")
    if tuple(lines[0].split()) != HEADER:
        raise DatasetError(path, f"header must be {' '.join(HEADER)!r}, found {lines[0]!r}", 1)
    ids, cust, days, cds, value = [], [], [], [], []
    for lineno, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) != 4:
            raise DatasetError(
                path, f"expected 4 fields, found {len(parts)}: {raw.strip()!r}", lineno
            )
        c, d, n, v = parts
        try:
            cid = int(c)
        except ValueError:
            raise DatasetError(path, f"customer_id {c!r} is not an integer", lineno) from None
        try:
            day = datetime.strptime(d, "%Y%m%d")
        except ValueError:
            raise DatasetError(path, f"date {d!r} is not a YYYYMMDD date", lineno) from None
        try:
            count = int(n)
        except ValueError:
            raise DatasetError(path, f"number_of_cds {n!r} is not an integer", lineno) from None
        try:
            dollars = float(v)
        except ValueError:
            raise DatasetError(path, f"dollar_value {v!r} is not a number", lineno) from None
        if count < 0 or dollars < 0 or dollars != dollars:
            raise DatasetError(path, f"negative or NaN amount: {raw.strip()!r}", lineno)
        ids.append(lineno - 1)
        cust.append(cid)
        days.append(day)
        cds.append(count)
        value.append(dollars)
    if not ids:
        raise DatasetError(path, "header only, no purchases")
    return pd.DataFrame(
        {
            "transaction_id": pd.Series(ids, dtype="int64"),
            "customer_id": pd.Series(cust, dtype="int64"),
            "date": pd.to_datetime(pd.Series(days)).astype("datetime64[ns]"),
            "number_of_cds": pd.Series(cds, dtype="int64"),
            "dollar_value": pd.Series(value, dtype="float64"),
        }
    )


def load_dataset(
    path: Path | None = None, expected_sha256: str | None = None
) -> tuple[pd.DataFrame, Path, str]:
    """Resolve, verify and parse the transaction log. Returns ``(transactions, path, sha256)``.

    Raises:
        DatasetError: see :func:`resolve_dataset` and :func:`parse_transactions`.
    """
    resolved, digest = resolve_dataset(path, expected_sha256)
    return parse_transactions(resolved), resolved, digest


def describe(transactions: pd.DataFrame, path: Path, sha256: str, source: str) -> DatasetInfo:
    """Summary figures of a parsed log."""
    first: date = transactions["date"].min().date()
    last: date = transactions["date"].max().date()
    return DatasetInfo(
        path=str(path),
        sha256=sha256,
        n_transactions=int(len(transactions)),
        n_customers=int(transactions["customer_id"].nunique()),
        first_date=first.isoformat(),
        last_date=last.isoformat(),
        total_dollar_value=round(float(transactions["dollar_value"].sum()), 2),
        source=source,
    )
