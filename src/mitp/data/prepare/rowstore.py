"""A conversion's rows kept on disk (SQLite), so a streamed source converts in memory flat in its rows.

A converter that streams its source twice adds one row per labelled sample on the first pass (source
split, row number, id, labels), assigns every row a manifest split (its own, or carved from train), and
on the second pass records each sample's image and text. Ids are unique across the whole store. The
manifest splits are read back as :class:`StoredSplit` views, in id order, so nothing holds all records.

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
                   target TEXT NOT NULL, PRIMARY KEY (source, idx));
CREATE TABLE records (id TEXT PRIMARY KEY, target TEXT NOT NULL, image TEXT, text TEXT, label TEXT NOT NULL);
CREATE INDEX records_by_target ON records (target, id);
"""


class RowStore:
    """Rows on disk: ``add`` them, ``carve`` the missing splits, ``assigned`` them back, ``record`` each."""

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

    def add(self, source: str, index: int, sample_id: str, labels: Sequence[str], target: str) -> tuple | None:
        """Store a row; if its id is taken, store nothing and return the ``(source, index)`` that holds it."""
        try:
            self.db.execute(
                "INSERT INTO rows VALUES (?, ?, ?, ?, ?)", (source, index, sample_id, json.dumps(list(labels)), target)
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

    def assigned(self, source: str) -> Iterator[tuple[int, str, list[str], str]]:
        """``(index, id, labels, manifest split)`` of a source split's stored rows, in row order."""
        for index, sample_id, labels, target in self.db.execute(
            "SELECT idx, id, labels, target FROM rows WHERE source = ? ORDER BY idx", (source,)
        ):
            yield index, sample_id, json.loads(labels), target

    def record(self, target: str, record: Record) -> None:
        label = json.dumps(list(record.label) if isinstance(record.label, tuple) else record.label)
        self.db.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?)", (record.id, target, record.image, record.text, label)
        )

    def split(self, target: str) -> StoredSplit:
        return StoredSplit(self, target)


class StoredSplit:
    """A manifest split's records read from a :class:`RowStore`, in id order, ids unique across splits."""

    presorted = True  # write_manifest neither sorts these nor checks their ids again

    def __init__(self, store: RowStore, target: str):
        self.store, self.target = store, target

    def __len__(self) -> int:
        return self.store.db.execute("SELECT COUNT(*) FROM records WHERE target = ?", (self.target,)).fetchone()[0]

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[Record]:
        for sample_id, image, text, label in self.store.db.execute(
            "SELECT id, image, text, label FROM records WHERE target = ? ORDER BY id", (self.target,)
        ):
            label = json.loads(label)
            yield Record(sample_id, image, text, tuple(label) if isinstance(label, list) else label)


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
