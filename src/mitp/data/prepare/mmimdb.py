"""MM-IMDB -> manifest (multi-label, 23 genres).

Raw layout (as distributed)::

    RAW/split.json                 {"train": [ids], "dev": [ids], "test": [ids]}
    RAW/dataset/<id>.jpeg          poster
    RAW/dataset/<id>.json          {"plot": [str, ...], "genres": [str, ...], ...}

``dev`` becomes ``val``. The text is the longest plot. Genres outside the 23 standard ones
(News, Reality-TV, Talk-Show, and anything else) are removed; a movie left with no genre
is dropped and counted.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ...jsonio import JSONError, read_json
from ..errors import BadJson, BadRecord, MissingFile, MissingSplitFile
from ..manifest import IdOwners, LabelSpace, Record
from .common import Conversion, image_ref, no_progress
from .registry import register_converter

# The standard 23-genre order used by the field (Arevalo et al., 2017).
MMIMDB_GENRES = (
    "Drama",
    "Comedy",
    "Romance",
    "Thriller",
    "Crime",
    "Action",
    "Adventure",
    "Horror",
    "Documentary",
    "Mystery",
    "Sci-Fi",
    "Fantasy",
    "Family",
    "Biography",
    "War",
    "History",
    "Music",
    "Animation",
    "Musical",
    "Western",
    "Sport",
    "Short",
    "Film-Noir",
)
MMIMDB_DROPPED_GENRES = ("News", "Reality-TV", "Talk-Show")
SPLIT_KEYS = {"train": "train", "dev": "val", "test": "test"}


def _load_json(path: Path):
    try:
        return read_json(path)
    except JSONError as err:
        raise BadJson(path, err.line, str(err)) from err


def _plot(meta) -> str:
    plot = meta.get("plot")
    if isinstance(plot, str):
        plot = [plot]
    if not isinstance(plot, list):
        return ""
    texts = [p.strip() for p in plot if isinstance(p, str) and p.strip()]
    return max(texts, key=len) if texts else ""  # max keeps the first of equally long plots


@register_converter(
    "mmimdb",
    help="MM-IMDB: 23 movie genres (multi-label), posters with plots",
    raw_help="RAW/dataset/<id>.jpeg + <id>.json and RAW/split.json",
)
def convert_mmimdb(raw: str | Path, out: str | Path, track=no_progress) -> Conversion:
    raw, out = Path(raw), Path(out)
    conv = Conversion("mmimdb", space=LabelSpace("multi_label", MMIMDB_GENRES), image_roots=[raw / "dataset"])
    split_file = raw / "split.json"
    if not split_file.is_file():
        raise MissingSplitFile(
            split_file,
            None,
            'MM-IMDB split.json not found; expected {"train": [ids], "dev": [ids], "test": [ids]} in the raw directory',
        )
    split_ids = _load_json(split_file)
    if not isinstance(split_ids, dict):
        raise BadRecord(split_file, None, 'must be an object {"train": [...], "dev": [...], "test": [...]}')
    for key in SPLIT_KEYS:
        if not isinstance(split_ids.get(key), list):
            raise BadRecord(split_file, None, f"no {key!r} list of movie ids")
    dataset = raw / "dataset"
    if not dataset.is_dir():
        raise MissingFile(dataset, None, "MM-IMDB dataset directory not found; expected RAW/dataset/<id>.{json,jpeg}")

    order = {g: i for i, g in enumerate(MMIMDB_GENRES)}
    removed: Counter = Counter()
    owners = IdOwners()
    for key, split in SPLIT_KEYS.items():
        records = []
        for movie in track(split_ids[key], description=f"reading {key} movies"):
            movie = str(movie)
            duplicate = owners.claim(movie, f"{key!r}", split_file, why=f", listed again in {key!r}")
            if duplicate:
                raise duplicate
            where = f"{split_file} [{key}] {movie}"
            meta_path, image = dataset / f"{movie}.json", dataset / f"{movie}.jpeg"
            if not meta_path.is_file():
                conv.drop("metadata <id>.json not found", where)
                continue
            meta = _load_json(meta_path)
            if not isinstance(meta, dict):
                raise BadRecord(meta_path, None, "movie metadata must be a JSON object")
            raw_genres = meta.get("genres") or []
            if not isinstance(raw_genres, list):
                raise BadRecord(meta_path, None, f"'genres' must be a list, got {raw_genres!r}")
            genres = sorted(
                {g.strip() for g in raw_genres if isinstance(g, str) and g.strip() in order}, key=order.__getitem__
            )
            removed.update({g.strip() for g in raw_genres if isinstance(g, str) and g.strip() not in order})
            if not genres:
                conv.drop(
                    "no genre left after removing non-standard genres" if raw_genres else "no genres", str(meta_path)
                )
                continue
            text = _plot(meta)
            if not text:
                conv.drop("no plot text", str(meta_path))
                continue
            if not image.is_file():
                conv.drop("poster <id>.jpeg not found", str(meta_path))
                continue
            records.append(Record(movie, image_ref(image, out), text, tuple(genres)))
        conv.splits[split] = records
    if removed:
        conv.notes.append("genres removed: " + ", ".join(f"{g} ({n})" for g, n in sorted(removed.items())))
    conv.notes.append("text: the longest plot of each movie; split.json 'dev' -> val")
    conv.write(out)
    return conv
