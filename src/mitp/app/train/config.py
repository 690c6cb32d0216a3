"""Run configs: one YAML file with ``data``, ``backbone``, ``method`` and optional sections.

    data: path/to/prepared/dataset      # a manifest directory (see docs/data.md), or
    # data: {path: ..., allow_external_paths: true}   to read images outside it
    # data: {path: ..., allow_missing: true}          samples may lack an image or a text (null)
    backbone: openai/clip-vit-large-patch14
    method: mitp
    seed: 0
    model: {prompt_length: 8}           # the method's config (num_classes/task come from the data)
    methods: {mitp: {num_steps: 4}}     # per-method model keys (for `mitp compare`)
    head: {hidden_dim: 512}             # the classification head, the same for every method
    train: {epochs: 10, lr: 1.0e-3, missing: {image: 0.35, text: 0.35}}   # missing: simulated drops
    eval: {every_epochs: 1, missing: {image: 0.5}}

``--set a.b=value`` overrides any key; unknown keys are errors naming the dotted key.
A run's config.yaml holds the resolved config: ``model`` complete for its method, no
``methods`` section. Over 400 lines because every train, eval and run key is declared here with its
help (what `mitp config` and the README's table print) beside the checks that span sections.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import yaml

from mitp.configuration import (
    ConfigError,
    ValidatedConfig,
    parse_overrides,
    quote,
    setting,
    yaml_error,
)
from mitp.data.errors import ManifestError
from mitp.data.manifest import read_labels
from mitp.data.missing import EvalMissingConfig, MissingConfig, TrainMissingConfig
from mitp.limits import IMAGE_SIZE_RANGE, TEXT_LENGTH_RANGE
from mitp.methods import get_method
from mitp.methods.head import HeadConfig


def _missing_section(config, kind: type[MissingConfig]) -> None:
    """A ``missing:`` mapping (from YAML) becomes its validated config, errors naming ``train.missing.<key>``."""
    if isinstance(config.missing, dict):
        config.missing = kind.from_dict(config.missing)
    elif config.missing is None:
        config.missing = kind()
    elif not isinstance(config.missing, MissingConfig):
        raise ConfigError(
            kind.key_prefix[:-1], f"must be a mapping (image, text, both, seed), got {quote(config.missing)}"
        )


@dataclass
class TrainConfig(ValidatedConfig):
    key_prefix: ClassVar[str] = "train."

    epochs: int = setting(10, "passes over the training split")
    batch_size: int = setting(32, "global batch, split across processes")
    lr: float = setting(1e-3, "the head's learning rate, and the base of every other group's")
    method_lr_scale: float = setting(
        1.0, "the method's own parameters (prompts, gates, hub, translators) train at lr * method_lr_scale"
    )
    weight_decay: float = setting(0.01, "AdamW weight decay")
    scheduler: Literal["cosine", "constant"] = setting(
        "cosine", "after the linear warmup: cosine decay to min_lr_ratio * lr, or constant"
    )
    warmup_ratio: float = setting(0.1, "fraction of all optimizer steps spent warming up linearly")
    min_lr_ratio: float = setting(0.0, "where the cosine decay ends, as a fraction of lr")
    grad_accum_steps: int = setting(1, "batches per optimizer step")
    max_grad_norm: float | None = setting(1.0, "gradient clipping norm; null: no clipping")
    clip_scope: Literal["per_group", "global"] = setting(
        "per_group",
        "clip each optimizer group (head, method, backbone) on its own, so large prompt gradients "
        "cannot shrink the head's step; global: one norm over everything",
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = setting("no", "bf16, or fp16 (CUDA only)")
    num_workers: int = setting(0, "DataLoader worker processes")
    max_text_length: int | None = setting(
        None, f"token limit, {TEXT_LENGTH_RANGE[0]} to the text tower's own; null: the text tower's own"
    )
    image_size: int | None = setting(
        None,
        f"override the image processor's size, {IMAGE_SIZE_RANGE[0]} to {IMAGE_SIZE_RANGE[1]} pixels a side "
        "(the towers interpolate position embeddings), e.g. smaller on a CPU",
    )
    on_bad_sample: Literal["error", "skip"] = setting(
        "error", "a bad image or manifest line stops the run, or is skipped, counted and reported"
    )
    checkpoint_every_steps: int = setting(
        0, "also save the resumable checkpoint every n optimizer steps; 0: only at the end of every epoch"
    )
    cache_prefix: bool = setting(False, "cache the frozen prefix's states on disk after the first pass")
    num_threads: int | None = setting(
        None,
        "torch threads of this run, set before any torch work; null: "
        "$OMP_NUM_THREADS if set, else every core this process may use "
        "(`mitp compare --jobs N` gives each run cores / N)",
    )
    compile: bool = setting(
        False,
        "torch.compile the model (inductor); minutes to compile on a CPU, see docs/performance.md for what it gains",
    )
    cache_dir: str | None = setting(
        None, "where the prefix cache lives; null: $MITP_CACHE/prefix (~/.cache/mitp/prefix)"
    )
    log_every_steps: int = setting(
        10, "diagnostics (gradient norm per part, gates, prompt norms, hub entropy) every n steps"
    )
    log_with: Literal["tensorboard", "wandb", "mlflow", "aim", "none"] = setting(
        "none",
        "experiment tracker, through Accelerate, its files in the run directory (pip install 'mitp[trackers]'; "
        "wandb offline: WANDB_MODE=offline)",
    )
    missing: MissingConfig = setting(
        default_factory=TrainMissingConfig,
        help="simulated missing modalities in the training split: the fractions of "
        "samples without their image / text / both, in a fixed pattern chosen by "
        "seed",
    )

    def __post_init__(self):
        _missing_section(self, TrainMissingConfig)
        super().__post_init__()

    def check(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum_steps", "log_every_steps"):
            self.require_at_least(name, 1)
        self.require_at_least("num_threads", 1, allow_null=True)
        self.require_positive("lr")
        self.require_positive("method_lr_scale")
        self.require_at_least("weight_decay", 0)
        self.require(0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        self.require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        self.require_positive("max_grad_norm", allow_null=True)
        self.require_at_least("num_workers", 0)
        self.require_at_least("checkpoint_every_steps", 0)
        self.require_in_range("max_text_length", *TEXT_LENGTH_RANGE, allow_null=True)
        self.require_in_range("image_size", *IMAGE_SIZE_RANGE, allow_null=True)


@dataclass
class EvalConfig(ValidatedConfig):
    key_prefix: ClassVar[str] = "eval."

    every_epochs: int = setting(1, "validation cadence in epochs; the last epoch is always evaluated")
    batch_size: int | None = setting(None, "null: the training batch size")
    select: Literal["accuracy", "f1_macro", "f1_weighted", "f1_micro", "f1_samples"] | None = setting(
        None,
        "the validation metric that picks the best checkpoint (and compare's setting); null: accuracy "
        "(single-label) or f1_micro (multi-label); single-label also reports f1_macro and f1_weighted, "
        "multi-label f1_macro, f1_samples and f1_weighted",
    )
    threshold: float | Literal["auto"] = setting(
        0.5,
        "multi-label decision threshold on sigmoid probabilities; auto: the one that maximises the "
        "selection metric on validation, recorded in results.json and used for test and predictions",
    )
    missing: MissingConfig = setting(
        default_factory=EvalMissingConfig,
        help="simulated missing modalities in the val and test splits (as train.missing)",
    )

    def __post_init__(self):
        _missing_section(self, EvalMissingConfig)
        super().__post_init__()

    def check(self) -> None:
        self.require_at_least("every_epochs", 1)
        self.require_at_least("batch_size", 1, allow_null=True)
        self.require(self.threshold == "auto" or 0 < self.threshold < 1, "threshold", "must be in (0, 1) or auto")


@dataclass
class RunConfig(ValidatedConfig):
    data: str = setting(
        "", "a prepared dataset directory (in YAML also a mapping: path, allow_external_paths, allow_missing)"
    )
    backbone: str = setting("", "the frozen backbone's spec")
    method: str = setting("", "a registered method")
    seed: int = setting(0, "seeds the model's init, the data order and every random choice of the run")
    allow_external_paths: bool = setting(
        False, "read images outside the dataset directory and its recorded image roots (absolute paths, .., symlinks)"
    )
    allow_missing: bool = setting(False, 'accept manifest lines with "image": null or "text": null')
    model: dict = setting(default_factory=dict, help="model keys for every method")
    methods: dict = setting(default_factory=dict, help="method name -> model keys (and a train section) for it alone")
    head: HeadConfig = setting(default_factory=HeadConfig, help="the classification head, the same for every method")
    train: TrainConfig = setting(default_factory=TrainConfig, help="training")
    eval: EvalConfig = setting(default_factory=EvalConfig, help="evaluation")

    REQUIRED: ClassVar[tuple] = ("data", "backbone", "method")
    DATA_FLAGS: ClassVar[tuple] = ("allow_external_paths", "allow_missing")
    SECTIONS: ClassVar[dict] = {"head": HeadConfig, "train": TrainConfig, "eval": EvalConfig}

    def __post_init__(self):
        for name, kind in self.SECTIONS.items():  # YAML mappings become their validated sections
            value = getattr(self, name)
            if value is None or isinstance(value, dict):
                setattr(self, name, kind.from_dict(value))
        for name in ("model", "methods"):
            if getattr(self, name) is None:
                setattr(self, name, {})
        super().__post_init__()

    def check(self) -> None:
        seed = self.seed  # numpy and torch take 32 bits
        self.require(0 <= seed < 2**32, "seed", f"must be >= 0 and < 2**32, got {quote(seed)}")
        for name, keys in self.methods.items():
            self.require(
                keys is None or isinstance(keys, dict),
                f"methods.{name}",
                f"must be a mapping of model keys, got {quote(keys)}",
            )
        self.methods = {name: dict(keys or {}) for name, keys in self.methods.items()}
        self.check_model_keys()

    @classmethod
    def from_dict(cls, raw: dict) -> RunConfig:
        """From YAML: ``data`` may be a mapping (path and the data flags); the flags live only there."""
        raw = dict(raw)
        known = cls.field_names() - set(cls.DATA_FLAGS)
        for key in raw:
            if key in cls.DATA_FLAGS:
                raise ConfigError(key, f"belongs under data: (data: {{path: ..., {key}: true}})")
            if key not in known:
                raise ConfigError(key, f"unknown top-level key; known keys: {', '.join(sorted(known))}")
        data = raw.get("data")
        if isinstance(data, dict):
            known = {"path", *cls.DATA_FLAGS}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(f"data.{unknown[0]}", f"unknown key; known keys: {', '.join(sorted(known))}")
            if data.get("path") in (None, ""):
                raise ConfigError("data.path", "is required")
            for flag in cls.DATA_FLAGS:
                if not isinstance(data.get(flag, False), bool):
                    raise ConfigError(f"data.{flag}", f"expected true or false, got {quote(data[flag])}")
            raw.update({flag: data[flag] for flag in cls.DATA_FLAGS if flag in data}, data=data["path"])
        for key in cls.REQUIRED:
            if raw.get(key) in (None, ""):
                raise ConfigError(key, "is required")
        return super().from_dict(raw)

    def check_model_keys(self) -> None:
        """``methods.<name>`` names a registered method and only keys it knows (model keys, and a ``train``
        section of train keys for that method); the head has its own section."""
        if "head" in self.model:
            raise ConfigError("model.head", "the head is configured for every method under `head:`")
        for name, keys in self.methods.items():
            try:
                known = get_method(name).config_class.field_names() - {"head"}
            except ConfigError as err:
                raise err.rekeyed(f"methods.{name}") from err
            for key in keys:
                if key == "train":
                    self.train_for(name)  # its keys and values are checked like train:'s own
                elif key not in known:
                    raise ConfigError(
                        f"methods.{name}.{key}",
                        f"unknown key for method {name!r}; known keys: {', '.join(sorted(known | {'train'}))}",
                    )

    def model_keys(self, method: str | None = None) -> dict:
        """The model keys for ``method`` (default: this run's): ``model`` with ``methods.<method>`` on top."""
        own = self.methods.get(method or self.method, {})
        return {**self.model, **{k: v for k, v in own.items() if k != "train"}}

    def train_for(self, method: str) -> TrainConfig:
        """The train section for ``method``: ``train`` with ``methods.<method>.train`` on top (e.g. its own lr)."""
        own = self.methods.get(method, {}).get("train")
        if not own:
            return self.train
        if not isinstance(own, dict):
            raise ConfigError(f"methods.{method}.train", f"must be a mapping of train keys, got {quote(own)}")
        try:
            return TrainConfig.from_dict({**self.train.to_dict(), **own})
        except ConfigError as err:
            raise err.rekeyed(f"methods.{method}.{err.key}") from err

    def for_method(self, method: str, seed: int | None = None) -> RunConfig:
        """This config as one run of ``method``: its model and train keys merged in, no ``methods`` section."""
        return dataclasses.replace(
            self,
            method=method,
            seed=self.seed if seed is None else seed,
            model=self.model_keys(method),
            train=self.train_for(method),
            methods={},
        )

    def to_dict(self) -> dict:
        flags = {k: True for k in ("allow_external_paths", "allow_missing") if getattr(self, k)}
        data = {
            "data": {"path": self.data, **flags} if flags else self.data,
            "backbone": self.backbone,
            "method": self.method,
            "seed": self.seed,
            "model": dict(self.model),
        }
        if self.methods:
            data["methods"] = {name: dict(keys) for name, keys in self.methods.items()}
        return {**data, "head": self.head.to_dict(), "train": self.train.to_dict(), "eval": self.eval.to_dict()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def can_miss_modalities(self) -> bool:
        """Whether samples of this run can lack a modality (then missing-aware methods switch it on)."""
        return self.allow_missing or self.train.missing.active or self.eval.missing.active

    def missing_by_split(self) -> dict[str, MissingConfig]:
        return {"train": self.train.missing, "val": self.eval.missing, "test": self.eval.missing}

    def eval_batch_size(self) -> int:
        return self.eval.batch_size or self.train.batch_size


def apply_overrides(raw: dict, overrides: dict) -> dict:
    """Set dotted keys (``train.lr``) in a nested dict; sections are created as needed.

    Every section on a key's path is copied before it is changed: YAML anchors (``deep_prompts:
    *prompts``) make two sections one object, and ``methods.mitp.hub`` must not reach the other."""
    raw = dict(raw)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for i, part in enumerate(parents):
            child = node.get(part)
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(".".join(parents[: i + 1]), f"is not a section, cannot set {dotted!r}")
            node[part] = child = dict(child)
            node = child
        node[leaf] = value
    return raw


def load_run_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML run config and apply ``key=value`` overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("", "no such file", str(path))
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError("", f"not valid UTF-8 ({err.reason} at byte {err.start})", str(path)) from err
        try:
            raw = yaml.safe_load(text) or {}
        except (yaml.YAMLError, RecursionError, ValueError) as err:
            where, why = yaml_error(err, text)
            raise ConfigError("", f"not valid YAML: {why}", f"{path}:{where}" if where else str(path)) from None
        if not isinstance(raw, dict):
            raise ConfigError("", "top level must be a mapping", str(path))
    overrides = parse_overrides(list(overrides))
    if any(key.startswith("data.") for key in overrides):  # `data: DIR` and --set data.allow_external_paths=...
        if isinstance(raw.get("data"), str):
            raw = {**raw, "data": {"path": raw["data"]}}
        if isinstance(overrides.get("data"), str):
            overrides["data.path"] = overrides.pop("data")
    try:
        config = RunConfig.from_dict(apply_overrides(raw, overrides))
        model = config.model_keys()
        if "num_classes" in model and "task" in model:  # resolved (a run's config.yaml): its method keys now
            resolve_method_config(config, model["num_classes"], model["task"])
        return config
    except ConfigError as err:  # a key of the file, not of --set: name the file
        given = any(err.key == key or err.key.startswith(key + ".") for key in overrides)
        raise (err if path is None or given else err.located(str(path))) from None


def resolve_method_config(config: RunConfig, num_classes: int, task: str):
    """The method's validated config, with the head size and task taken from the dataset."""
    model = config.model_keys()
    for key, value in (("num_classes", num_classes), ("task", task)):
        if key in model and model[key] != value:
            raise ConfigError(f"model.{key}", f"is {quote(model[key])} but the dataset has {value!r}")
        model[key] = value
    fields = get_method(config.method).config_class.field_names()
    if "missing_aware" in fields and model.get("missing_aware") is None:
        model["missing_aware"] = config.can_miss_modalities()
    try:
        return get_method(config.method).config_class.from_dict({**model, "head": config.head})
    except ConfigError as err:
        section = "methods." + config.method if err.key in config.methods.get(config.method, {}) else "model"
        key = err.key if err.key == "method" else f"{section}.{err.key}"
        raise err.rekeyed(key) from err


def resolved(config: RunConfig, method_config) -> RunConfig:
    """``config`` with the method section replaced by the full validated method config (head apart)."""
    model = {k: v for k, v in method_config.to_dict().items() if k not in ("method", "head")}
    return dataclasses.replace(config, model=model, methods={}, head=method_config.head)


def resolve(config: RunConfig) -> RunConfig:
    """The fully resolved config, as a run's config.yaml holds it (classes and task from labels.json)."""
    try:
        labels = read_labels(config.data)
    except ManifestError as err:
        raise ConfigError("data", str(err)) from err
    return resolved(config, resolve_method_config(config, labels.num_classes, labels.task))
