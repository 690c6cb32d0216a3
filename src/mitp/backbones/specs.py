"""Model shapes as data: the configs behind the built-in backbone specs.

``tiny-*`` are small random models for tests and CI; ``shape:*`` have the real
published shapes (random weights) so parameter counts and benchmarks need no download.
"""

from __future__ import annotations

# Tiny towers have different widths and depths on purpose, so code that mixes up
# the text and vision dimensions fails loudly in tests.
TINY_BERT = dict(
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    max_position_embeddings=32,
    pad_token_id=0,
)

TINY_VIT = dict(
    hidden_size=48, intermediate_size=96, num_hidden_layers=8, num_attention_heads=4, image_size=32, patch_size=8
)

# CLIP's text tower also needs its begin and end tokens
TINY_CLIP = {"text_config": {**TINY_BERT, "bos_token_id": 998, "eos_token_id": 999}, "vision_config": TINY_VIT,
             "projection_dim": 24}  # fmt: skip


def _clip(text: tuple[int, int, int], vision: tuple[int, int, int, int], projection: int) -> dict:
    """A CLIP config from (width, layers, heads) of the text tower and (width, layers, heads, patch) of the vision
    tower: MLPs four times as wide, 77 text positions, 224 px images, as every published CLIP has."""
    (t_width, t_layers, t_heads), (v_width, v_layers, v_heads, patch) = text, vision
    return {
        "text_config": dict(hidden_size=t_width, intermediate_size=4 * t_width, num_hidden_layers=t_layers,
                            num_attention_heads=t_heads, max_position_embeddings=77),
        "vision_config": dict(hidden_size=v_width, intermediate_size=4 * v_width, num_hidden_layers=v_layers,
                              num_attention_heads=v_heads, image_size=224, patch_size=patch),
        "projection_dim": projection,
    }  # fmt: skip


# Published shapes of OpenAI CLIP checkpoints (weights are random when built from these).
SHAPE_CLIP = {
    "clip-vit-base-patch16": _clip((512, 12, 8), (768, 12, 12, 16), 512),
    "clip-vit-large-patch14": _clip((768, 12, 12), (1024, 24, 16, 14), 768),
}
