"""The records mitp reads back from files, validated key by key on pydantic: a model folder's config.json and
onnx.json (:mod:`mitp.files` has the layout), and the training loop's saved position. Every problem is a
:class:`~mitp.files.CheckpointError` naming the file and the dotted key. Torch-free.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data.manifest import TASKS
from .files import (
    CONFIG_FILE,
    FORMAT,
    RUNTIME_FILE,
    RUNTIME_FORMAT,
    CheckpointError,
    file_in,
    read_json_file,
)
from .limits import IMAGE_SIZE_RANGE, TEXT_LENGTH_RANGE


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
    message = first["msg"].removeprefix("Value error, ")
    message = "missing" if first["type"] == "missing" else message[0].lower() + message[1:]
    if not key.strip("."):  # a check across keys: its message says what it saw, the whole record would not help
        return message
    got = "" if first["type"] == "missing" else f" (got {str(first.get('input'))[:60]!r})"
    return f"{key}: {message}{got}"


class Schema(BaseModel):
    """A file's record: unknown keys are errors, and no silent coercion (1 is no bool, "1" no int)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


PositiveInt = Annotated[int, Field(ge=1)]
Name = Annotated[str, Field(min_length=1)]
TokenId = Annotated[int, Field(ge=0, lt=2**31)]
PixelSize = Annotated[int, Field(ge=1, le=IMAGE_SIZE_RANGE[1])]  # a side; larger takes minutes and gigabytes an image
TokenCount = Annotated[int, Field(ge=1, le=TEXT_LENGTH_RANGE[1])]  # no text tower has more positions


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
    max_text_length: Annotated[int, Field(ge=TEXT_LENGTH_RANGE[0], le=TEXT_LENGTH_RANGE[1])] | None = None
    image_size: Annotated[int, Field(ge=IMAGE_SIZE_RANGE[0], le=IMAGE_SIZE_RANGE[1])] | None = None


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

    @field_validator("method")
    @classmethod
    def _names_a_method(cls, method: dict) -> dict:
        if not isinstance(method.get("method"), str):
            raise ValueError(f'must name its method ("method": "mitp", ...), got {str(method)[:60]}')
        return method

    @model_validator(mode="after")
    def _method_fits_the_labels(self) -> ModelConfig:
        # read here, so that a runtime that never builds the method (ONNX) refuses what PyTorch refuses
        outputs, task = self.method.get("num_classes"), self.method.get("task")
        if type(outputs) is not int or (outputs, task) != (len(self.labels.labels), self.labels.task):
            raise ValueError(
                f"the labels ({self.labels.task}, {len(self.labels.labels)}) do not fit the model "
                f"(method.task {task!r}, method.num_classes {str(outputs)[:40]})"
            )
        return self


class ImageSpec(Schema):
    """What :class:`mitp.data.images.ImageTransform` takes, in JSON."""

    shortest_edge: PixelSize | None = None
    resize_to: Annotated[list[PixelSize], Field(min_length=2, max_length=2)] | None = None
    crop: Annotated[list[PixelSize], Field(min_length=2, max_length=2)] | None = None
    resample: Literal[0, 1, 2, 3, 4, 5]  # PIL's Image.Resampling codes
    rescale_factor: float | None
    mean: Annotated[list[float], Field(min_length=3, max_length=3)] | None
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=3, max_length=3)] | None


class HashText(Schema):
    kind: Literal["hash"]
    vocab_size: Annotated[int, Field(ge=9, lt=2**31)]
    max_length: TokenCount
    bos_token_id: TokenId | None
    eos_token_id: TokenId | None
    pad_token_id: TokenId = 0

    @model_validator(mode="after")
    def _fits(self) -> HashText:
        specials = [t for t in (self.bos_token_id, self.eos_token_id, self.pad_token_id) if t is not None]
        if any(t >= self.vocab_size for t in specials):
            raise ValueError(f"special token ids {specials} must be below vocab_size {self.vocab_size}")
        if self.max_length < 1 + (self.bos_token_id is not None) + (self.eos_token_id is not None):
            raise ValueError(f"max_length {self.max_length} leaves no room for a word beside the special tokens")
        return self


class TokenizersText(Schema):
    kind: Literal["tokenizers"]
    file: Name
    max_length: TokenCount


class InputSpec(Schema):
    image: ImageSpec
    blank_image_shape: Annotated[list[PixelSize], Field(min_length=3, max_length=3)]
    text: HashText | TokenizersText = Field(discriminator="kind")
    pad_token_id: TokenId
    empty_text: list[TokenId] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        image, (channels, *size) = self.image, self.blank_image_shape
        fixed = image.crop or image.resize_to
        if channels != 3 or fixed is None or list(fixed) != size:
            raise ValueError(
                f"images must come out at a fixed size, the blank image's {size} with 3 channels (crop "
                f"{image.crop}, resize_to {image.resize_to}, blank_image_shape {self.blank_image_shape})"
            )
        if len(self.empty_text) > self.text.max_length:
            raise ValueError(f"empty_text has {len(self.empty_text)} ids, over max_length {self.text.max_length}")
        return self


GRAPH_INPUTS = ("pixel_values", "input_ids", "attention_mask", "modality_mask")


class RuntimeSpec(Schema):
    """``onnx.json``: the graph's inputs, its parity with PyTorch, and the preprocessing it expects."""

    format: Literal[RUNTIME_FORMAT]
    inputs: list[Literal[GRAPH_INPUTS]] = Field(min_length=3)
    reads_modality_mask: bool
    opset: PositiveInt
    parity_max_abs: float
    int8: Name | None = None
    sha256: dict[Name, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]]  # each graph's, checked when it loads
    preprocessing: InputSpec

    @field_validator("inputs")
    @classmethod
    def _graph_inputs(cls, inputs: list[str]) -> list[str]:
        if inputs[:3] != list(GRAPH_INPUTS[:3]) or len(set(inputs)) != len(inputs):
            raise ValueError(f"must be {list(GRAPH_INPUTS[:3])}, and modality_mask if the graph reads it")
        return inputs


def read_model_config(folder: str | os.PathLike) -> ModelConfig:
    path = file_in(folder, CONFIG_FILE, str(folder), must_exist=False)
    return validated(path, ModelConfig, read_json_file(path))


def read_runtime_spec(folder: str | os.PathLike) -> RuntimeSpec:
    path = file_in(folder, RUNTIME_FILE, str(folder), must_exist=False)
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
