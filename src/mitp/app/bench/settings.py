"""What a benchmark is asked (settings, method names), what it returns (rows, result), and its error."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mitp.configuration import ConfigError, parse_overrides
from mitp.methods import available_methods, get_method

from ..threads import available_cores

REFERENCE = "full_finetune"  # the ratio columns are to this method's measurements

# Keys every JSON row has: the nine a user needs first, then the measurement's details.
REQUIRED_KEYS = tuple(
    "method backbone batch_size trainable_params peak_memory_mb train_step_ms infer_samples_per_s "
    "ratio_step_vs_full ratio_memory_vs_full".split()
)
EXTRA_KEYS = tuple(
    "total_params model_memory_mb peak_memory_total_mb infer_ms train_step_ms_min train_step_ms_max "
    "train_step_cpu_ms infer_cpu_ms ratio_step_cpu_vs_full device threads memory_kind rounds steps warmup "
    "seq_len timed_train_steps timed_infer_passes".split()
)
ROW_KEYS = REQUIRED_KEYS + EXTRA_KEYS

MEMORY_KINDS = {
    "cpu_peak_rss_growth": "cpu: growth of peak RSS in a fresh process per method (VmHWM reset after the model "
    "is built; weights and the Python runtime excluded)",
    "cpu_peak_rss_growth_unreset": "cpu: growth of peak RSS in a fresh process per method (VmHWM could not be "
    "reset, so a build-time peak may hide part of the growth)",
    "cuda_peak_allocated_growth": "cuda: peak torch.cuda.max_memory_allocated during the training steps minus "
    "the memory allocated before them (weights, input batch)",
}


@dataclass(frozen=True)
class Target:
    """A ratio a benchmark run is checked against: ``METHOD/REFERENCE:KEY<=BOUND`` (``--target``)."""

    method: str
    reference: str
    key: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Target:
        pair, colon, rest = text.partition(":")
        method, slash, reference = pair.partition("/")
        key, sep, bound = rest.partition("<=")
        try:
            value = float(bound)
        except ValueError:
            value = None
        if not (colon and slash and sep and method and reference and key.strip() in ROW_KEYS and value):
            raise ConfigError(
                "--target",
                f"{text!r}: expected METHOD/REFERENCE:KEY<=BOUND with KEY a row key "
                "(e.g. mitp/full_finetune:train_step_ms<=0.45)",
            )
        return cls(method.strip(), reference.strip(), key.strip(), value)

    def check(self, rows: list[dict]) -> str | None:
        """The measured ratio against the bound as a plain fact, or None if either method was not measured."""
        by_method = {row["method"]: row for row in rows}
        if self.method not in by_method or not by_method.get(self.reference, {}).get(self.key):
            return None
        ratio = by_method[self.method][self.key] / by_method[self.reference][self.key]
        return (
            f"{self.method} {self.key} / {self.reference} {self.key} = {ratio:.2f} (target <= {self.bound:g}: "
            f"{'met' if ratio <= self.bound else 'NOT met'})"
        )


@dataclass
class BenchSettings:
    backbone: str = "shape:clip-vit-base-patch16"
    methods: tuple[str, ...] = ()  # empty: every registered method
    batch_size: int = 8
    steps: int = 3  # timed training steps (and inference passes) per method per round
    rounds: int = 3
    warmup: int = 2  # untimed training steps and inference passes per method, before round 1
    seq_len: int = 32
    device: str | None = None  # None: cuda if available, else cpu
    threads: int | None = None  # None: every core this process may use
    num_classes: int = 101
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    targets: tuple[Target, ...] = ()  # ratios to check the measurements against (--target)

    def resolved(self) -> BenchSettings:
        import torch  # the settings module stays importable without torch until a benchmark runs

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        methods = tuple(self.methods) or tuple(available_methods())
        return dataclasses.replace(self, methods=methods, device=device, threads=self.threads or available_cores())


@dataclass
class BenchResult:
    settings: BenchSettings
    rows: list[dict]
    # (round, method) in the order the workers were asked; round 0 is the warm-up.
    schedule: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def checks(self) -> list[str]:
        return [line for line in (target.check(self.rows) for target in self.settings.targets) if line]


class BenchError(RuntimeError):
    """A worker failed for a reason other than its input (which is a UserError)."""


def parse_method_spec(spec: str) -> tuple[str, dict]:
    """``mitp`` -> ("mitp", {}); ``mitp[prompt_gate=false;num_steps=2]`` -> ("mitp", {...}): one method
    setting as a bench row, so settings of one method can be measured side by side."""
    name, bracket, rest = spec.partition("[")
    if not bracket:
        return spec, {}
    if not rest.endswith("]"):
        raise ConfigError("methods", f"{spec!r}: expected NAME[key=value,...]")
    return name, parse_overrides([pair for pair in rest[:-1].split(";") if pair])


def method_names(text: str) -> tuple[str, ...]:
    """Comma-separated method names (a setting as NAME[key=value;...]), each checked against the registry;
    empty: every registered method."""
    names = tuple(m.strip() for m in text.split(",") if m.strip()) or tuple(available_methods())
    for name in names:
        get_method(parse_method_spec(name)[0])
    return names
