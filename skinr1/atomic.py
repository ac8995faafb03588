"""Atomic directory writes: a checkpoint or export is either complete at its final path or absent.

Files go into a temporary sibling directory; only when everything is written is it renamed into
place (`os.replace` is atomic within one filesystem). A previous version at the same path is moved
aside first and deleted only after the new one is in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_directory(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes `final_path` when the block exits without error."""
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes 0700 directories
        retired = None
        if final.exists():
            retired = final.parent / f".{final.name}.old"
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(final, retired)
        os.replace(staging, final)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
