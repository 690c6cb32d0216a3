"""Every registered method builds on every tiny backbone through the one model API."""

import pytest
import torch

from mitp.backbones import build_backbone
from mitp.methods import (
    MethodConfig,
    MultimodalClassifier,
    available_methods,
    build_model,
    get_method,
    make_config,
    register_method,
)


@pytest.mark.parametrize("name", available_methods())
def test_registered_method_builds_and_classifies(name, tiny_backbone):
    entry = get_method(name)
    assert issubclass(entry.config_class, MethodConfig) and issubclass(entry.model_class, MultimodalClassifier)
    # a method that trains the backbone gets its own, so shared fixtures stay frozen
    backbone = build_backbone(tiny_backbone.spec) if entry.model_class.trains_backbone else tiny_backbone
    model = build_model(make_config(name, num_classes=5), backbone)
    assert isinstance(model, entry.model_class)
    batch = backbone.random_batch(3, 9)
    out = model(**batch, labels=torch.tensor([0, 4, 2]))
    assert out.logits.shape == (3, 5) and out.loss.ndim == 0
    assert model.num_parameters(trainable_only=True) > 0


def test_every_method_folder_registers_itself_under_its_config_name():
    from pathlib import Path

    import mitp.methods

    root = Path(mitp.methods.__file__).parent
    folders = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    assert set(available_methods()) == folders  # nothing registered twice or from elsewhere, none missing
    for name in folders:
        assert get_method(name).config_class.method == name


def test_registering_a_taken_name_fails():
    entry = get_method("mitp")

    class Other(MultimodalClassifier):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_method(entry.config_class, Other)
