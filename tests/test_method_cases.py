"""Per-method properties, driven by the METHOD_CASES table (tests/method_cases.py): exactly the
expected parameters train and get gradient, a frozen prefix can be cached to fp16 tolerance, and a
method that inserts prompts starts exactly at the frozen towers."""

import pytest
import torch

from method_cases import GATES, METHOD_CASES, SPECS, MethodCase
from mitp.backbones import build_backbone
from mitp.data.dataset import build_datasets, make_dataloader, model_inputs
from mitp.methods import available_methods, build_model, get_method, make_config
from mitp.synthetic import NUM_CLASSES, write_toy_dataset
from toy_training import labelled_batch

# Attention key biases cannot change any output (softmax ignores a per-query constant): under full
# fine-tuning their gradient is zero up to rounding. Every other trainable tensor must get gradient.
KEY_BIAS = ("self_attn.k_proj.bias", "attention.self.key.bias", "attention.k_proj.bias")
PROMPT_CASES = [c for c in METHOD_CASES if c.inserts_prompts and c.overrides.get("prompt_gate", True)]


def case_id(case: MethodCase) -> str:
    return case.id


def build(case: MethodCase, spec: str, shared: dict, **extra):
    """A fresh backbone for methods that train it (they flip requires_grad), else the shared one."""
    backbone = build_backbone(spec) if not case.cacheable else shared[spec]
    return build_model(make_config(case.method, **{"num_classes": NUM_CLASSES, **case.overrides, **extra}), backbone)


@pytest.fixture
def shared(tiny_clip, tiny_pair):
    return {"tiny-clip": tiny_clip, "tiny-pair": tiny_pair}


def test_the_table_covers_every_method_and_states_its_properties(tiny_clip):
    assert {c.method for c in METHOD_CASES} == set(available_methods())
    for case in METHOD_CASES:
        model_class = get_method(case.method).model_class
        assert model_class.inserts_prompts == case.inserts_prompts, case.id
        if case.cacheable:  # full_finetune builds its own backbone: it would unfreeze the shared one
            model = build_model(make_config(case.method, num_classes=3, **case.overrides), tiny_clip)
            assert model.frozen_prefix() is not None, case.id
    full = build_model(make_config("full_finetune", num_classes=3), build_backbone("tiny-clip"))
    assert full.frozen_prefix() is None


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("case", METHOD_CASES, ids=case_id)
def test_exactly_the_expected_parameters_train_and_get_gradient(case, spec, task, shared):
    model = build(case, spec, shared, task=task)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == case.expected_trainable(spec)
    assert set(model.trainable_state_dict()) == trainable
    with torch.no_grad():  # gates start closed (the next test): open them so every prompt reaches the loss
        for name, param in model.named_parameters():
            if name in GATES:
                param.fill_(0.5)
    model.train()
    model(**labelled_batch(model.backbone, task)).loss.backward()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert name.startswith("backbone.") and param.grad is None, f"frozen {name} got a gradient"
        elif name.endswith(KEY_BIAS):
            assert param.grad is not None and param.grad.abs().max() < 1e-6, f"{name}: gradient beyond rounding"
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} got no gradient"
    assert not model.backbone.training, "the towers stay in eval mode"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), sizes=(16, 8, 8))


@pytest.mark.parametrize("case", [c for c in METHOD_CASES if c.cacheable], ids=case_id)
def test_a_cached_prefix_gives_the_same_logits_to_fp16_tolerance(case, toy, tiny_backbone, tmp_path):
    from prefix_stores import open_store

    model = build_model(make_config(case.method, num_classes=4, **case.overrides), tiny_backbone).eval()
    with torch.no_grad():  # open gates, so the prompts' part of the computation is compared too
        for name, param in model.named_parameters():
            if name in GATES:
                param.fill_(0.5)
    dataset = build_datasets(toy, tiny_backbone, splits=("train",))["train"]
    store = open_store(tmp_path, dataset, tiny_backbone, model.frozen_prefix())
    batch = next(iter(make_dataloader(dataset, 8, shuffle=False)))
    inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
    with torch.no_grad():
        direct = model(**inputs).logits
        store.put(batch["ids"], *model.encode_prefix(**inputs))
        cached = model(prefix=store.get(batch["ids"])).logits
    assert store.has(batch["ids"]) and not store.complete
    assert torch.allclose(cached, direct, atol=2e-3, rtol=1e-2)
    assert not torch.equal(cached, direct), "cached states are fp16: not bit-identical"


def features(model, batch):
    with torch.no_grad():
        return model.forward_features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("case", PROMPT_CASES, ids=case_id)
def test_a_fresh_prompt_method_reproduces_the_frozen_embeddings(case, tiny_backbone):
    batch = tiny_backbone.random_batch(4, 10, torch.Generator().manual_seed(3))  # padded text rows
    reference = features(build_model(make_config("late_fusion", num_classes=3), tiny_backbone), batch)
    gated = features(build_model(make_config(case.method, num_classes=3, **case.overrides), tiny_backbone), batch)
    for part in ("image", "text"):
        assert torch.allclose(gated[part], reference[part], atol=1e-6, rtol=0), part
    # The same prompts without gates change the embeddings: the property is the gates' doing.
    torch.manual_seed(0)
    ungated = features(
        build_model(make_config(case.method, num_classes=3, **{**case.overrides, "prompt_gate": False}), tiny_backbone),
        batch,
    )
    assert not torch.allclose(ungated["image"], reference["image"], atol=1e-4)
