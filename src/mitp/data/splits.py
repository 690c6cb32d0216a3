"""Seeded, stratified carving of held-out splits."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, MutableSequence, Sequence
from typing import TypeVar

T = TypeVar("T")


def stratified_split(
    items: Sequence[T],
    key: Callable[[T], str],
    id_of: Callable[[T], str],
    fractions: Sequence[tuple[str, float]],
    seed: int,
    rest: str = "train",
) -> dict[str, list[T]]:
    """Split ``items`` by group ``key`` so every group is spread over the splits in proportion.

    For each group (in sorted key order) the members are sorted by id, shuffled with one
    ``random.Random(seed)``, and for each ``(name, fraction)`` in turn the next
    ``ceil(fraction * group size)`` members go to ``name`` -- but at least one member of
    every group stays in ``rest`` (so a class of one sample is never held out). The result
    depends only on the items, the seed and the fractions, never on input order.
    """
    check_fractions(fractions, rest)
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    out: dict[str, list[T]] = {name: [] for name, _ in fractions}
    out[rest] = []
    ordered = ((k, sorted(groups[k], key=id_of)) for k in sorted(groups))
    for name, members in carve_groups(ordered, fractions, seed, rest):
        out[name].extend(members)
    return out


def check_fractions(fractions: Sequence[tuple[str, float]], rest: str = "train") -> None:
    for name, fraction in fractions:
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} fraction must be in [0, 1), got {fraction}")
    if sum(f for _, f in fractions) >= 1:
        raise ValueError(f"held-out fractions sum to {sum(f for _, f in fractions)}; nothing left for {rest}")


def carve_groups(
    groups: Iterable[tuple[str, MutableSequence[T]]],
    fractions: Sequence[tuple[str, float]],
    seed: int,
    rest: str = "train",
) -> Iterator[tuple[str, MutableSequence[T]]]:
    """The core of :func:`stratified_split`: ``(split name, members)`` parts of each group.

    ``groups`` come in sorted key order with their members in id order; they are shuffled in place.
    Any mutable sequence works (an ``array`` of row numbers keeps a large dataset's carving small).
    """
    rng = random.Random(seed)
    for _, members in groups:
        rng.shuffle(members)
        pos = 0
        for name, fraction in fractions:
            take = math.ceil(fraction * len(members) - 1e-9)
            take = max(0, min(take, len(members) - pos - 1))
            yield name, members[pos : pos + take]
            pos += take
        yield rest, members[pos:]


def rarest_label_key(label_lists: Sequence[Sequence[str]]) -> Callable[[Sequence[str]], str]:
    """Stratification key for multi-label data: the sample's rarest label (ties by name)."""
    counts: dict[str, int] = defaultdict(int)
    for labels in label_lists:
        for name in set(labels):
            counts[name] += 1

    def key(labels: Sequence[str]) -> str:
        return min(labels, key=lambda name: (counts[name], name)) if labels else ""

    return key


__all__ = ["carve_groups", "check_fractions", "rarest_label_key", "stratified_split"]
