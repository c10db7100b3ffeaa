"""Reading the warehouse's Parquet files in the API: through fastparquet, not pyarrow.

The pipeline writes the files with pyarrow (a pipeline dependency, 157 MB installed); the API
image holds fastparquet (about 10 MB with cramjam) instead, so that it stays under its size goal
(docs/deploy.md, "Installed size of each image's dependency group"). The engine is named here
rather than left to pandas' "auto", so the API reads with the same library in the tests (whose
environment has both) as in its image.
"""

from __future__ import annotations

from pathlib import Path

import fastparquet
import pandas as pd


def parquet_columns(path: Path | str) -> list[str]:
    """Column names of the Parquet file ``path``, in file order.

    Raises:
        OSError, ValueError: the file is missing or not Parquet.
    """
    return list(fastparquet.ParquetFile(str(path)).columns)


def read_parquet(path: Path | str, columns: list[str]) -> pd.DataFrame:
    """``columns`` of the Parquet file ``path`` as a frame (one row per stored row; a column stored
    as a dictionary, such as a pandas category, comes back as a category).

    Raises:
        OSError, ValueError: the file is missing, not Parquet, or lacks one of ``columns``.
    """
    return pd.read_parquet(path, columns=columns, engine="fastparquet")
