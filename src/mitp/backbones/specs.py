"""Model shapes as data: the configs behind the built-in backbone specs.

``tiny-*`` are small random models for tests and CI; ``shape:*`` have the real
published shapes (random weights) so parameter counts and benchmarks need no download.
"""

from __future__ import annotations

# Tiny towers have different widths and depths on purpose, so code that mixes up
# the text and vision dimensions fails loudly in tests.
TINY_CLIP = {
    "text_config": dict(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        max_position_embeddings=32,
        bos_token_id=998,
        eos_token_id=999,
        pad_token_id=0,
    ),
    "vision_config": dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=8, num_attention_heads=4, image_size=32, patch_size=8
    ),
    "projection_dim": 24,
}

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

# Published shapes of OpenAI CLIP checkpoints (weights are random when built from these).
SHAPE_CLIP = {
    "clip-vit-base-patch16": {
        "text_config": dict(
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=8,
            max_position_embeddings=77,
        ),
        "vision_config": dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        ),
        "projection_dim": 512,
    },
    "clip-vit-large-patch14": {
        "text_config": dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
        ),
        "vision_config": dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
        ),
        "projection_dim": 768,
    },
}
