"""The studies of ``mitp sweep``: their storage, their sampler, and what each one searches.

One Optuna study per method (``<study>-<method>``) in one storage: SQLite in the output directory by
default, or any database URL, so that workers on many machines join the same studies by running the
same command. A bad URL is named with the reason. The sampler's randomness comes from the sweep's seed
and the trial's number, so workers never propose the same trial and a worker started after a killed one
does not repeat its trial. A study records what it searches (space and resolved config); a sweep with
another space, config or data is refused rather than reported with the old study's trials. Heartbeats:
the trial of a killed worker is failed after a grace period and enqueued again with the same parameters.
Workers started at the same moment on a fresh storage all create its tables: the ones that lose that race
open it again.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mitp.configuration import flatten

from ..errors import UserError
from .compare_plan import EXECUTION_KEYS, differences
from .sweep_space import Param, check_space, method_config

# Heartbeats, the retry of stale trials and TPE's constant liar are marked experimental in Optuna; they are
# what makes a killed worker's trial resume and parallel workers spread out, so they are used on purpose.
warnings.filterwarnings("ignore", category=ExperimentalWarning)
HEARTBEAT_S, GRACE_S = 10, 30  # a killed worker's trial is failed (and retried) this long after its last beat
MAX_RETRY = 3
DEFINITION = "mitp_sweep"  # the study's user attribute that records what it searches
# What the database says to a worker that creates a fresh storage's tables (and their first rows) while another
# worker does: the other one has made them, so opening the storage again succeeds.
RACE_MESSAGES = ("already exists", "UNIQUE constraint failed")
RACE_TRIES, RACE_WAIT_S = 5, 0.1  # waits 0.1, 0.2, 0.4 and 0.8 s between the tries
T = TypeVar("T")


class SweepConflict(UserError):
    """A study or output directory that holds trials of another sweep."""


class StorageError(UserError):
    """A ``--storage`` URL that cannot be opened (named, with the reason)."""


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """TPE whose randomness is drawn from the sweep's seed and the trial's number (unique in a study): workers
    sharing a study never propose the same trial, a worker started after a killed one does not repeat its
    trial, and a sweep with one worker is reproducible. The constant liar keeps parallel workers apart once
    TPE models the results."""

    def __init__(self, seed: int):
        self.seed = seed
        self._samplers: dict[int, optuna.samplers.TPESampler] = {}

    def _of(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.TPESampler:
        if trial.number not in self._samplers:
            seed = int(np.random.SeedSequence([self.seed % 2**32, trial.number]).generate_state(1)[0])
            self._samplers[trial.number] = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        return self._samplers[trial.number]

    def infer_relative_search_space(self, study, trial):
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._of(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._of(trial).after_trial(study, trial, state, values)
        self._samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to reseed: every trial's randomness is fixed by its number."""


@dataclasses.dataclass
class Sweep:
    """What every worker of a sweep agrees on (they are started with the same command)."""

    config_path: str | None
    overrides: list[str]
    methods: list[str]
    space: list[Param]
    trials: int
    out: Path
    storage: str | None = None
    study: str = "mitp"
    seed: int = 0
    prune: bool = True
    heartbeat_s: int = HEARTBEAT_S
    grace_s: int = GRACE_S
    _storage: RDBStorage | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(Path(self.out) / 'sweep.db').resolve()}"

    def open_storage(self) -> RDBStorage:
        """The studies' storage (opened once); a URL that cannot be opened is a StorageError naming it."""
        if self._storage is None:
            if self.storage is None:  # the default storage is a file in --out
                Path(self.out).mkdir(parents=True, exist_ok=True)
            self._storage = open_storage(self.storage_url(), self.heartbeat_s, self.grace_s)
            Path(self.out).mkdir(parents=True, exist_ok=True)  # only once the storage opened: a refusal leaves none
        return self._storage

    def study_name(self, method: str) -> str:
        return f"{self.study}-{method}"

    def open_study(self, method: str) -> optuna.Study:
        # not a line per study opened, nor a failed trial's traceback: the sweep names each in one line
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
            if self.prune
            else optuna.pruners.NopPruner()
        )
        return optuna.create_study(
            study_name=self.study_name(method),
            storage=self.open_storage(),
            direction="maximize",
            sampler=TrialSeededSampler(self.seed),
            pruner=pruner,
            load_if_exists=True,
        )

    def definition(self, method: str) -> dict:
        """What a study searches for ``method``: its space and its resolved config (how runs execute apart)."""
        config = flatten(method_config(self.config_path, self.overrides, method).to_dict())
        definition = {
            "space": {p.key: p.spec() for p in self.space if p.applies_to(method)},
            "config": {k: v for k, v in config.items() if k not in EXECUTION_KEYS},
        }
        return json.loads(json.dumps(definition))  # as the storage gives it back


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> RDBStorage:
    """An Optuna RDB storage with heartbeats and the retry of stale trials; a StorageError names a URL that
    cannot be opened and why."""
    try:
        shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(
            f"--storage {url!r}: not a database URL (e.g. sqlite:///path/sweep.db or postgresql://user@host/db)"
        ) from None
    try:
        return retry_creation_race(
            lambda: RDBStorage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                # several local workers wait for the SQLite file's lock
                engine_kwargs={"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None,
            )
        )
    except sqlalchemy.exc.NoSuchModuleError:
        reason = f"unknown kind of database {url.partition(':')[0]!r}"
    except ImportError as err:
        reason = f"its database driver is not installed ({err})"
    except sqlalchemy.exc.SQLAlchemyError as err:
        cause = str(getattr(err, "orig", None) or err).splitlines()[0]
        reason = f"cannot open it ({cause})"
    raise StorageError(f"--storage {shown}: {reason}")


def lost_creation_race(err: Exception) -> bool:
    """Whether ``err`` is the database refusing to create a table or row that another worker has just created."""
    if not isinstance(err, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError)):
        return False
    message = str(getattr(err, "orig", None) or err)
    return any(text in message for text in RACE_MESSAGES)


def retry_creation_race(make: Callable[[], T]) -> T:
    """``make()``, tried again after a short wait while it fails because another worker is creating the same
    tables at the same moment (:func:`lost_creation_race`), at most ``RACE_TRIES`` times; any other error is
    raised at once."""
    for attempt in range(RACE_TRIES - 1):
        try:
            return make()
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as err:
            if not lost_creation_race(err):
                raise
        time.sleep(RACE_WAIT_S * 2**attempt)
    return make()  # the last try: its error is the storage's


def counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {state.name.lower(): states.count(state) for state in TrialState}


def failures(study: optuna.Study) -> int:
    """Failed trials that are not being tried again (a killed worker's trial is retried, not lost)."""
    trials = study.get_trials(deepcopy=False)
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials}
    # a retry records the first failed trial: a chain of retries names it, and its later failures are retries too
    return sum(
        1
        for t in trials
        if t.state == TrialState.FAIL
        and t.number not in retried
        and RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is None
    )


def frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """A running trial as the storage holds it (its parameters and its retry record)."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def run_dir_of(sweep: Sweep, method: str, trial: optuna.trial.FrozenTrial | optuna.Trial) -> Path:
    """A trial's run directory; a retried trial (its worker was killed) resumes the original's."""
    if isinstance(trial, optuna.Trial):
        trial = frozen(trial)
    number = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return Path(sweep.out) / method / f"trial-{trial.number if number is None else number}"


def prepare(sweep: Sweep) -> None:
    """Everything that can refuse the sweep, before its first trial: the space against the config, the storage,
    and each method's study (made if new; refused if it or ``OUT/<method>`` holds trials of another sweep)."""
    check_space(sweep.config_path, sweep.overrides, sweep.methods, sweep.space)
    for method in sweep.methods:
        study = sweep.open_study(method)
        wanted = sweep.definition(method)
        recorded = study.user_attrs.get(DEFINITION)
        trials = len(study.get_trials(deepcopy=False))
        if recorded is None:
            leftovers = sorted(p.name for p in (Path(sweep.out) / method).glob("trial-*"))
            if not trials and leftovers:
                raise SweepConflict(
                    f"--out: {Path(sweep.out) / method} holds {', '.join(leftovers[:3])}"
                    f"{' ...' if len(leftovers) > 3 else ''} of another study than {sweep.study_name(method)} "
                    f"in {sweep.storage_url()}; use another --out (or that study's --study and --storage)"
                )
            study.set_user_attr(DEFINITION, wanted)
            continue
        changed = [
            f"--space {key}: {recorded['space'].get(key, '(not searched)')} in the study, "
            f"{wanted['space'].get(key, '(not searched)')} asked"
            for key in sorted(set(recorded["space"]) | set(wanted["space"]))
            if recorded["space"].get(key) != wanted["space"].get(key)
        ] + differences(recorded["config"], wanted["config"], "in the study")
        if changed:
            raise SweepConflict(
                f"study {sweep.study_name(method)} in {sweep.storage_url()} holds {trials} trial(s) of another "
                f"sweep: {'; '.join(changed)}; use another --study or --out to start a new one, or the same "
                "settings to continue it"
            )


__all__ = [
    "GRACE_S",
    "HEARTBEAT_S",
    "MAX_RETRY",
    "StorageError",
    "Sweep",
    "SweepConflict",
    "TrialSeededSampler",
    "counts",
    "failures",
    "frozen",
    "lost_creation_race",
    "open_storage",
    "prepare",
    "retry_creation_race",
    "run_dir_of",
]
