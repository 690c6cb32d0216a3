"""The records mitp reads back from files, validated key by key on pydantic: a model folder's config.json and
onnx.json (:mod:`mitp.files` has the layout), and the training loop's saved position. Every problem is a
:class:`~mitp.files.CheckpointError` naming the file and the dotted key. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .data.manifest import TASKS
from .files import CONFIG_FILE, FORMAT, RUNTIME_FILE, RUNTIME_FORMAT, CheckpointError, read_json_file


def validated(path: str | os.PathLike, schema: type[BaseModel], data: Any, where: str = "") -> BaseModel:
    """``data`` (a file's content) as ``schema``; the first problem is a CheckpointError naming the file and key
    (``where`` prefixes the key: the section the data came from)."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise CheckpointError(f"{path}: {describe_error(err, where)}") from None


def describe_error(err: ValidationError, where: str = "") -> str:
    """Pydantic's first error as ``key.sub: what is wrong (got ...)``."""
    first = err.errors(include_url=False)[0]
    key = where + ".".join(str(part) for part in first["loc"])
    got = "" if first["type"] == "missing" else f" (got {str(first.get('input'))[:60]!r})"
    message = "missing" if first["type"] == "missing" else first["msg"][0].lower() + first["msg"][1:]
    return f"{key}: {message}{got}" if key.strip(".") else f"{message}{got}"


class Schema(BaseModel):
    """A file's record: unknown keys are errors, and no silent coercion (1 is no bool, "1" no int)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


PositiveInt = Annotated[int, Field(ge=1)]
Name = Annotated[str, Field(min_length=1)]


class BackboneInfo(BaseModel):
    """The backbone's spec and its shapes when the model was saved (checked against the one rebuilt)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    spec: Name


class LabelsInfo(Schema):
    task: Literal[TASKS]
    labels: list[Name] = Field(min_length=1)

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("label names must be distinct")
        return labels


class PreprocessingInfo(Schema):
    max_text_length: PositiveInt | None = None
    image_size: PositiveInt | None = None


class ModelConfig(Schema):
    """``config.json`` of a model folder."""

    format: Literal[FORMAT]
    method: dict
    backbone: BackboneInfo
    labels: LabelsInfo
    preprocessing: PreprocessingInfo
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = None  # multi-label; None: not chosen yet
    data: str | None = None
    source: str | None = None
    results: dict | None = None


class ImageSpec(Schema):
    """What :class:`mitp.data.images.ImageTransform` takes, in JSON."""

    shortest_edge: PositiveInt | None = None
    resize_to: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    crop: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    resample: Literal[0, 1, 2, 3, 4, 5]  # PIL's Image.Resampling codes
    rescale_factor: float | None
    mean: Annotated[list[float], Field(min_length=3, max_length=3)] | None
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=3, max_length=3)] | None


class HashText(Schema):
    kind: Literal["hash"]
    vocab_size: Annotated[int, Field(ge=9)]
    max_length: PositiveInt
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int = 0


class TokenizersText(Schema):
    kind: Literal["tokenizers"]
    file: Name
    max_length: PositiveInt


class InputSpec(Schema):
    image: ImageSpec
    blank_image_shape: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)]
    text: HashText | TokenizersText = Field(discriminator="kind")
    pad_token_id: int
    empty_text: list[int]


GRAPH_INPUTS = ("pixel_values", "input_ids", "attention_mask", "modality_mask")


class RuntimeSpec(Schema):
    """``onnx.json``: the graph's inputs, its parity with PyTorch, and the preprocessing it expects."""

    format: Literal[RUNTIME_FORMAT]
    inputs: list[Literal[GRAPH_INPUTS]] = Field(min_length=3)
    reads_modality_mask: bool
    opset: PositiveInt
    parity_max_abs: float
    int8: Name | None = None
    preprocessing: InputSpec

    @field_validator("inputs")
    @classmethod
    def _graph_inputs(cls, inputs: list[str]) -> list[str]:
        if inputs[:3] != list(GRAPH_INPUTS[:3]) or len(set(inputs)) != len(inputs):
            raise ValueError(f"must be {list(GRAPH_INPUTS[:3])}, and modality_mask if the graph reads it")
        return inputs


def read_model_config(folder: str | os.PathLike) -> ModelConfig:
    path = Path(folder) / CONFIG_FILE
    return validated(path, ModelConfig, read_json_file(path))


def read_runtime_spec(folder: str | os.PathLike) -> RuntimeSpec:
    path = Path(folder) / RUNTIME_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {RUNTIME_FILE}; export the model with `mitp export RUN --out DIR --onnx`")
    return validated(path, RuntimeSpec, read_json_file(path))


__all__ = [
    "ModelConfig",
    "RuntimeSpec",
    "Schema",
    "describe_error",
    "read_model_config",
    "read_runtime_spec",
    "validated",
]
