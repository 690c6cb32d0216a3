"""A prefix store opened directly on one split (the trainer opens its stores through PrefixCache)."""

from pathlib import Path

from mitp.app.prefix_cache import PrefixStore, plan_store


def open_store(root: Path, dataset, backbone, depths: tuple[int, int]) -> PrefixStore:
    """The store for one ``ManifestDataset`` split and prefix depth (created empty if new)."""
    plan = plan_store(root, dataset, backbone, depths)
    return PrefixStore(plan.directory, plan.ids, plan.text_shape, plan.vision_shape)
