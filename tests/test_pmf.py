"""PMF: the two passes per fusion layer are real, queries cross towers, every prompt kind trains."""

import pytest
import torch

from layer_calls import TOWERS, record_layer_calls
from mitp.methods import build_model, make_config
from mitp.synthetic import NUM_CLASSES


def sequence_lengths(backbone, batch):
    patches = (backbone.image_size // 8) ** 2  # both tiny specs use 8-pixel patches
    return {"text": batch["input_ids"].shape[1], "vision": patches + 1}


@pytest.mark.parametrize("n_fusion_layers", [1, 2, 3])
def test_only_the_fusion_layers_run_twice_and_only_they_build_a_graph(tiny_backbone, n_fusion_layers):
    model = build_model(make_config("pmf", num_classes=3, n_fusion_layers=n_fusion_layers), tiny_backbone)
    calls = record_layer_calls(tiny_backbone, lambda: model(**tiny_backbone.random_batch(2, 8)))
    for tower, depth in (("text", 6), ("vision", 8)):
        first = depth - n_fusion_layers
        assert [len(calls[(tower, i)]) for i in range(depth)] == [1] * first + [2] * n_fusion_layers
        assert [calls[(tower, i)][0]["grad"] for i in range(depth)] == [False] * first + [True] * n_fusion_layers


def test_each_pass_runs_on_the_documented_tokens(tiny_backbone):
    m = 3
    model = build_model(make_config("pmf", num_classes=3, prompt_length=m), tiny_backbone).eval()
    batch = tiny_backbone.random_batch(2, 8, torch.Generator().manual_seed(3))
    with torch.no_grad():
        calls = record_layer_calls(tiny_backbone, lambda: model(**batch))
    length = sequence_lengths(tiny_backbone, batch)
    layers = {"text": model.text_layers, "vision": model.vision_layers}
    prompts = {"text": model.text_prompts, "vision": model.vision_prompts}
    translate_into = {"text": model.vision_to_text, "vision": model.text_to_vision}
    other = {"text": "vision", "vision": "text"}
    with torch.no_grad():
        for k in range(2):
            for tower in TOWERS:
                query_pass, fusion_pass = calls[(tower, layers[tower][k])]
                n = length[tower]
                # Both passes see the same sequence tokens.
                assert torch.equal(query_pass["input"][:, :n], fusion_pass["input"][:, :n])
                # Pass 1: [tokens; query; query context].
                p = prompts[tower][k]
                assert torch.equal(query_pass["input"][:, n:], torch.cat([p.query, p.query_context]).expand(2, -1, -1))
                # Pass 2: [tokens; translated query of the other tower; fusion context].
                src = other[tower]
                q_other = calls[(src, layers[src][k])][0]["output"][:, length[src] : length[src] + m]
                expected = torch.cat([translate_into[tower][k](q_other), p.fusion_context.expand(2, -1, -1)], dim=1)
                assert torch.allclose(fusion_pass["input"][:, n:], expected, atol=1e-6)
                # Only the fusion pass's sequence outputs continue: they are the next layer's input.
                nxt = layers[tower][k] + 1
                if k == 0:
                    assert torch.equal(calls[(tower, nxt)][0]["input"][:, :n], fusion_pass["output"][:, :n])


def open_gates(model):
    """PMF starts with closed gates (tests/test_start_at_frozen.py): open them to see the fusion."""
    with torch.no_grad():
        model.text_gates.fill_(0.5)
        model.vision_gates.fill_(0.5)
    return model


def test_queries_cross_towers(tiny_backbone):
    model = open_gates(build_model(make_config("pmf", num_classes=3), tiny_backbone)).eval()
    batch = tiny_backbone.random_batch(2, 8, torch.Generator().manual_seed(1))
    new_image = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    first_text, last_text = model.text_layers[0], model.text_layers[-1]
    with torch.no_grad():
        base = record_layer_calls(tiny_backbone, lambda: model(**batch))
        changed = record_layer_calls(tiny_backbone, lambda: model(**new_image))
    n = batch["input_ids"].shape[1]
    # The text query pass depends on the text alone ...
    assert torch.equal(base[("text", first_text)][0]["output"], changed[("text", first_text)][0]["output"])
    # ... but the fusion pass carries the image in through the translated vision queries.
    assert not torch.allclose(
        base[("text", last_text)][1]["output"][:, :n], changed[("text", last_text)][1]["output"][:, :n]
    )


def test_every_prompt_kind_gets_gradient(tiny_backbone):
    # The public PMF file never trains its fusion-context prompts; ours must.
    model = open_gates(build_model(make_config("pmf", num_classes=NUM_CLASSES), tiny_backbone)).train()
    batch = tiny_backbone.random_batch(4, 10, torch.Generator().manual_seed(0))
    model(**batch, labels=torch.tensor([0, 1, 2, 3])).loss.backward()
    for tower in (model.text_prompts, model.vision_prompts):
        for prompts in tower:
            for kind in ("query", "query_context", "fusion_context"):
                param = getattr(prompts, kind)
                assert param.requires_grad and param.grad is not None and param.grad.abs().sum() > 0, kind


@pytest.mark.parametrize("mapper_hidden", [None, 10])
def test_translator_shapes(tiny_clip, mapper_hidden):
    model = build_model(make_config("pmf", num_classes=3, mapper_hidden=mapper_hidden), tiny_clip)
    t2v, v2t = model.text_to_vision[0], model.vision_to_text[0]
    assert isinstance(t2v[1], torch.nn.ReLU) and isinstance(v2t[1], torch.nn.ReLU)
    # Default hidden = half the source width (text 32, vision 48).
    assert (t2v[0].in_features, t2v[0].out_features, t2v[2].out_features) == (32, mapper_hidden or 16, 48)
    assert (v2t[0].in_features, v2t[0].out_features, v2t[2].out_features) == (48, mapper_hidden or 24, 32)
    assert model.text_prompts[0].query.shape == (4, 32) and model.vision_prompts[1].fusion_context.shape == (4, 48)
