"""Regenerate the Markdown reports (reports/README.md and reports/images/*.md) from the
records under reports/records/. The output depends only on the records and the catalog, so
the same records always give the same bytes; files whose content is unchanged are not touched.
Run pages (reports/runs/) are written by the run they describe and are left as they are.
"""

from __future__ import annotations

import json
import sys

from syncer import report
from syncer.catalog import load_catalog
from syncer.ledger import Ledger


def configure(parser) -> None:
    pass


def run(args) -> int:
    catalog = load_catalog(args.catalog)
    records = Ledger(args.reports).all()
    written = report.regenerate(records, catalog, args.reports)
    if args.json:
        json.dump({"records": len(records), "written": written}, sys.stdout, indent=2)
        print()
    else:
        print(f"{len(records)} records; {len(written)} report files written"
              + (":\n  " + "\n  ".join(written) if written else " (all up to date)"))
    return 0
