"""Progress bars of long runs (inference, review, data generation): tqdm on stderr, so stdout keeps the report."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "req"):
    """A tqdm bar on stderr (stdout keeps the report) with rate and ETA (tqdm's default format shows both)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True)
