"""A conversion's rows kept on disk (SQLite), so a streamed source converts in memory flat in its rows.

A converter that streams its source adds one row per kept sample (source split, row number, id, label
names, image, text) with the manifest split its source gives it; missing splits are then carved from
train, on the rows kept. Ids are unique across the whole store. The manifest splits are read back as
:class:`StoredSplit` views, in id order, so nothing holds all records.

The database is a hidden temporary file in the output folder (on the same disk as the output, never in
a RAM-backed /tmp); it is removed when the store is closed (after the manifest is written, the
conversion reads its splits back from the manifest: :class:`WrittenSplit`) or garbage-collected.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import weakref
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..manifest import LabelSpace, Record, iter_split, split_path
from ..splits import carve_groups, check_fractions, rarest_label_key

SCHEMA = """
CREATE TABLE rows (source TEXT NOT NULL, idx INTEGER NOT NULL, id TEXT NOT NULL UNIQUE, labels TEXT NOT NULL,
                   target TEXT NOT NULL, image TEXT, text TEXT, PRIMARY KEY (source, idx));
CREATE INDEX rows_by_target ON rows (target, id);
"""


class RowStore:
    """Rows on disk: ``add`` them, ``carve`` the missing splits, read each manifest split back (``split``)."""

    def __init__(self, folder: str | os.PathLike):
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, self.path = tempfile.mkstemp(dir=folder, prefix=".mitp-rows-", suffix=".sqlite")
        os.close(fd)
        self.db = sqlite3.connect(self.path)
        self._closer = weakref.finalize(self, _remove, self.db, self.path)
        # a scratch file rebuilt from the source on any failure: durability would only cost time
        self.db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + SCHEMA)

    def close(self) -> None:
        self._closer()

    def add(
        self,
        source: str,
        index: int,
        sample_id: str,
        labels: Sequence[str],
        target: str,
        image: str | None,
        text: str | None,
    ) -> tuple | None:
        """Store a row; if its id is taken, store nothing and return the ``(source, index)`` that holds it."""
        try:
            self.db.execute(
                "INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?)",
                (source, index, sample_id, json.dumps(list(labels)), target, image, text),
            )
        except sqlite3.IntegrityError:
            holder = self.db.execute("SELECT source, idx FROM rows WHERE id = ?", (sample_id,)).fetchone()
            if holder is None:  # the (source, index) key itself is repeated: a converter bug
                raise
            return holder
        return None

    def rows(self, target: str) -> int:
        """How many stored rows are assigned to manifest split ``target``."""
        return self.db.execute("SELECT COUNT(*) FROM rows WHERE target = ?", (target,)).fetchone()[0]

    def carve(self, fractions: Sequence[tuple[str, float]], seed: int, multi: bool) -> None:
        """Move ``fractions`` of train to the named splits, exactly as :func:`stratified_split` would:
        stratified by label (multi-label: the rarest label), seeded, independent of row order."""
        check_fractions(fractions)
        key: Callable[[list[str]], str] = lambda labels: labels[0]  # noqa: E731
        if multi:
            key = rarest_label_key(self._train_labels())
        groups: dict[str, array] = defaultdict(lambda: array("q"))
        for rowid, labels in self.db.execute("SELECT rowid, labels FROM rows WHERE target = 'train' ORDER BY id"):
            groups[key(json.loads(labels))].append(rowid)
        parts = carve_groups(((k, groups[k]) for k in sorted(groups)), fractions, seed)
        for name, members in parts:
            if name != "train":  # what stays in train is already there
                self.db.executemany("UPDATE rows SET target = ? WHERE rowid = ?", ((name, r) for r in members))

    def _train_labels(self) -> Iterator[list[str]]:
        for (labels,) in self.db.execute("SELECT labels FROM rows WHERE target = 'train'"):
            yield json.loads(labels)

    def split(self, target: str, space: LabelSpace) -> StoredSplit:
        return StoredSplit(self, target, space)


class StoredSplit:
    """A manifest split's records read from a :class:`RowStore`, in id order, ids unique across splits; a
    multi-label record's names each once, in the label space's order (as the other converters write them)."""

    presorted = True  # write_manifest neither sorts these nor checks their ids again

    def __init__(self, store: RowStore, target: str, space: LabelSpace):
        self.store, self.target, self.space = store, target, space

    def __len__(self) -> int:
        return self.store.rows(self.target)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[Record]:
        for sample_id, image, text, labels in self.store.db.execute(
            "SELECT id, image, text, labels FROM rows WHERE target = ? ORDER BY id", (self.target,)
        ):
            names = json.loads(labels)
            label = tuple(sorted(set(names), key=self.space.index.__getitem__)) if self.space.multi_label else names[0]
            yield Record(sample_id, image, text, label)


class WrittenSplit:
    """A written manifest split read back as records, for the conversion's summary once the store is gone."""

    presorted = True

    def __init__(self, out_dir: str | os.PathLike, split: str, space: LabelSpace):
        self.out_dir, self.split, self.space = out_dir, split, space

    def __len__(self) -> int:
        with open(split_path(self.out_dir, self.split), "rb") as f:
            return sum(1 for line in f if line.strip())

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[Record]:
        for sample in iter_split(self.out_dir, self.split, self.space, allow_external_paths=True, allow_missing=True):
            if isinstance(sample, Exception):
                raise sample
            yield Record(sample.id, sample.image, sample.text, sample.label)


def _remove(db: sqlite3.Connection, path: str) -> None:
    db.close()
    Path(path).unlink(missing_ok=True)


__all__ = ["RowStore", "StoredSplit", "WrittenSplit"]
