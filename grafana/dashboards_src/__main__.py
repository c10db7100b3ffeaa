"""``python -m grafana.dashboards_src [OUT_DIR]``: render the shared dashboards and those of every
registered use case (default ``grafana/dashboards/``) and print the written paths."""

from __future__ import annotations

import sys
from pathlib import Path

from grafana.dashboards_src import DEFAULT_OUT, write_all

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in write_all(out):
        print(path)
