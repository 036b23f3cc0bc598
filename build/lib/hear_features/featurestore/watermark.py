"""What reached the online store: the watermark kept beside each offline table.

Feast's incremental materialisation only reads rows with an event timestamp inside the
task's window. A row can miss that window: appended offline by a run that crashed before
its online write, or registered with a timestamp older than the last run (a study's
recordings from years back, with ``ttl`` 0: Feast's first window starts a year ago). So
the engine also sends every row created after the newest ``created`` it has confirmed
online (the watermark), and moves the watermark only after a successful write. The same
rule serves the embeddings view and every plain view over a Parquet file
(``clip_metadata``).

A watermark is only true of the online database it was measured against: each database
carries a random id (made by ``feast apply``), and a watermark recorded for another id
(the database was removed and created again) counts as nothing sent, so every row goes
out again.

The state lives in ``<table>.state.json`` (written atomically), with the counters of the
last run of the embeddings view for people to read. ``feast teardown`` empties the
online store, and the state files go with it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hear_features.atomic import atomic_write_bytes
from hear_features.schema import CREATED, EVENT_TIMESTAMP

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EmbedStats:
    """What one materialisation of the embeddings view did."""

    embedded: int = 0
    reused: int = 0
    already_stored: int = 0
    failed: int = 0
    superseded: int = 0
    sent_online: int = 0
    model_id: str = ""


class OnlineWatermark:
    """The state file of one offline table, for the online database ``online_id``."""

    def __init__(self, table_path: Path, online_id: str | None = None) -> None:
        self.path = table_path.with_name(table_path.name + ".state.json")
        self.state = self._read()
        self.online_id = online_id

    @property
    def value(self) -> dt.datetime | None:
        """The newest ``created`` confirmed online (None: nothing confirmed yet, or only
        in another online database than ``online_id``, or in one nobody recorded)."""
        if self.online_id is not None and self.state.get("online_store") != self.online_id:
            return None  # another database, or one not recorded (state of an older version)
        raw = self.state.get("online_watermark")
        return dt.datetime.fromisoformat(raw) if raw else None

    def unsent(self, emb: pa.Table, end: dt.datetime) -> pa.ChunkedArray:
        """Rows before ``end`` created after the watermark: rows stranded by a crash
        after the offline append, or registered with an old timestamp."""
        ts = emb[EVENT_TIMESTAMP]
        before_end = pc.less(ts, pa.scalar(end, ts.type))
        if self.value is None:
            return before_end
        cutoff = pa.scalar(self.value, emb[CREATED].type)
        return pc.and_(pc.greater(emb[CREATED], cutoff), before_end)

    def advance(self, emb: pa.Table, until: dt.datetime, held_back: pa.Table | None = None) -> None:
        """After a successful write of every row before ``until``: the newest ``created``
        among them is online (in the database ``online_id``).

        ``held_back``: rows of ``emb`` kept out of this write (their recording was
        refused). The watermark stays below the oldest of them, so they are sent by a
        later run once they can be."""
        ts = emb[EVENT_TIMESTAMP]
        sent = emb.filter(pc.less(ts, pa.scalar(until, ts.type)))
        if held_back is not None and held_back.num_rows:
            sent = sent.filter(pc.less(sent[CREATED], pc.min(held_back[CREATED])))
            if sent.num_rows == 0:
                return  # nothing before the oldest held-back row: the watermark stays
        newest = pc.max(sent[CREATED]).as_py() if sent.num_rows else None
        self.state["online_watermark"] = newest.isoformat() if newest is not None else None
        if self.online_id is not None:
            self.state["online_store"] = self.online_id

    def save(self, stats: EmbedStats | None = None) -> None:
        """Write the state, with the counters of this run when given (true even when it
        failed)."""
        if stats is not None:
            total = int(self.state.get("embedded_total", 0)) + stats.embedded
            self.state["embedded_total"] = total
            self.state["last_run"] = {
                **dataclasses.asdict(stats),
                "finished": dt.datetime.now(dt.UTC).isoformat(),
            }
        atomic_write_bytes(self.path, json.dumps(self.state, indent=2).encode())

    def forget(self) -> None:
        """The online store was emptied (``feast teardown``)."""
        self.path.unlink(missing_ok=True)
        self.state = {}

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            log.warning(
                "ignoring unreadable state file %s; all rows will be re-sent online", self.path
            )
            return {}
