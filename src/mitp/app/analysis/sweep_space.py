"""What ``mitp sweep`` searches: the ``--space`` syntax, and the check, before the first trial, that every value
the space can propose is one the run config accepts for every method.

Space syntax: ``KEY=loguniform:LOW:HIGH``, ``uniform:LOW:HIGH``, ``int:LOW:HIGH`` or ``choice:V1,V2,...``
(values parsed as YAML). ``methods.<name>.KEY`` applies to that method only.
"""

from __future__ import annotations

import dataclasses
import json
import math

from mitp.configuration import ConfigError, parse_value
from mitp.methods import get_method

from ..train.config import RunConfig, load_run_config, resolve

KINDS = ("loguniform", "uniform", "int", "choice")


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched config key: ``kind`` and its arguments (bounds, or the choices)."""

    key: str
    kind: str
    args: tuple

    def suggest(self, trial):
        """The trial's value for this key (an ``optuna.Trial``)."""
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, *self.args, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.key, *self.args)
        if self.kind == "int":
            return trial.suggest_int(self.key, *self.args)
        return trial.suggest_categorical(self.key, list(self.args))

    def applies_to(self, method: str) -> bool:
        return not self.key.startswith("methods.") or self.key.split(".")[1] == method

    def spec(self) -> str:
        """The ``KIND:ARGS`` text it was given as."""
        return f"{self.kind}:" + (
            ",".join(map(str, self.args)) if self.kind == "choice" else ":".join(map(str, self.args))
        )

    def extremes(self) -> tuple:
        """The values that stand for all it can propose: both bounds, or every choice."""
        return self.args


def parse_space(specs: list[str]) -> list[Param]:
    """``["train.lr=loguniform:1e-4:3e-3", "methods.mitp.tau=choice:0.05,0.1"]`` -> Params; a bad one is a
    ConfigError naming its key."""
    params = []
    for spec in specs:
        key, sep, rest = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--space", f"expected KEY=KIND:ARGS, got {spec!r}")
        kind, _, args = rest.partition(":")
        if kind not in KINDS:
            raise ConfigError(key, f"unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
        if key in ("method", "seed", "data") or any(p.key == key for p in params):
            raise ConfigError(key, "cannot be searched, or is given twice")
        if kind == "choice":
            values = tuple(parse_value(v.strip()) for v in args.split(","))
            if not args.strip() or len(set(map(repr, values))) != len(values):
                raise ConfigError(key, f"choice needs distinct comma-separated values, got {args!r}")
            params.append(Param(key, kind, values))
            continue
        bounds = args.split(":")
        try:
            low, high = (int(b) if kind == "int" else float(b) for b in bounds)
        except ValueError:
            raise ConfigError(key, f"{kind} needs LOW:HIGH numbers, got {args!r}") from None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ConfigError(key, f"{kind} needs finite bounds, got {args!r}")
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ConfigError(key, f"{kind} needs LOW < HIGH (and LOW > 0 for loguniform), got {args!r}")
        params.append(Param(key, kind, (low, high)))
    if not params:
        raise ConfigError("--space", "give at least one KEY=KIND:ARGS to search")
    return params


def trial_overrides(overrides: list[str], method: str, params: dict) -> list[str]:
    """The ``--set`` pairs of one trial: the sweep's, its method, and its searched values."""
    return [*overrides, f"method={method}", *(f"{key}={json.dumps(value)}" for key, value in params.items())]


def method_config(config_path, overrides: list[str], method: str, params: dict | None = None) -> RunConfig:
    """The resolved config a trial of ``method`` trains with ``params``, as its run's config.yaml holds it."""
    return resolve(load_run_config(config_path, trial_overrides(overrides, method, params or {})).for_method(method))


def check_space(config_path, overrides: list[str], methods: list[str], space: list[Param]) -> None:
    """Refuse, before any trial, a space that no trial could train: a key the config does not have or a value
    it refuses (an int key searched as a float, a bound out of the key's range), a methods.NAME key for a
    method not searched, or a base config that does not resolve. The error names the searched key."""
    for method in methods:
        get_method(method)  # an unknown method fails here, naming it
    for param in space:
        if param.key.startswith("methods.") and param.key.split(".")[1] not in methods:
            raise ConfigError(param.key, f"searches method {param.key.split('.')[1]!r}, which --methods leaves out")
    for method in methods:
        method_config(config_path, overrides, method)  # the config itself: its errors name their own key
        for param in (p for p in space if p.applies_to(method)):
            for value in param.extremes():
                try:
                    method_config(config_path, overrides, method, {param.key: value})
                except ConfigError as err:
                    raise ConfigError(
                        param.key,
                        f"--space {param.key}={param.spec()} proposes {value!r}, which a run of {method} "
                        f"refuses ({err})",
                    ) from err


__all__ = ["KINDS", "Param", "check_space", "method_config", "parse_space", "trial_overrides"]
