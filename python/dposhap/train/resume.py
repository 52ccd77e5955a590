"""Resumability: whether a source's adapter is up to date, a reused adapter's manifest entry, and the
leftovers of an interrupted run.

A source whose finished adapter carries the same data hash and training hash, and whose weights
still match their recorded checksum, is skipped; adapters are written to a temporary folder and
renamed when complete, so an interrupted source leaves only a temporary folder, deleted here.
"""

from __future__ import annotations

import shutil

from ..data import SourceData
from ..models import adapter_metadata
from ..run import Run, SourceEntry


def up_to_date(run: Run, source: SourceData, training_hash: str) -> bool:
    """Whether the source's adapter was trained on the same data, the same way, and is intact on disk
    (a truncated or bit-rotten weights file no longer matches its recorded checksum: it is retrained)."""
    folder = run.adapter_dir(source.name)
    try:
        meta = adapter_metadata(folder) or {}
    except Exception:  # a damaged dposhap.json: the adapter is retrained
        return False
    if meta.get("data_hash") != source.data_hash or meta.get("training_hash") != training_hash:
        return False
    return run.adapter_damage(folder, meta.get("adapter_sha256")) is None


def entry_from_adapter(run: Run, source: SourceData) -> SourceEntry:
    """A reused adapter's manifest entry, read from the ``dposhap.json`` written beside its weights.

    Parameters
    ----------
    run
        The run directory holding the adapter.
    source
        The source whose adapter is reused.

    Returns
    -------
    SourceEntry
        The entry as it was when the adapter was trained.
    """
    meta = adapter_metadata(run.adapter_dir(source.name)) or {}
    return SourceEntry.from_dict(
        {k: v for k, v in meta.items() if k != "source"}, run.adapter_dir(source.name), source.name
    )


def remove_leftovers(run: Run) -> None:
    """Delete half-written adapters and files of an interrupted run (they were never renamed into place).

    Call only while holding the run's lock: another process's temporary files would go too.
    """
    for path in run.root.glob(".*.tmp"):  # atomic writes' temporary files (the run lock is held)
        path.unlink(missing_ok=True)
    if run.adapters_dir.is_dir():
        for path in run.adapters_dir.iterdir():
            if path.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(path, ignore_errors=True)
