"""What a linear probe run is asked to do: one frozen, validated settings object.

Every number that changes a result (folds, repeats, seeds, the regularisation grids,
the bootstrap size, the near-duplicate threshold) lives here, so a report that records
this object records everything needed to run the probe again and get the same numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Literal

from hear_features.errors import ProbeError

Task = Literal["auto", "binary", "multiclass", "regression"]
Level = Literal["clip", "recording"]
DuplicateAction = Literal["warn", "merge"]

TASKS = ("auto", "binary", "multiclass", "regression")
LEVELS = ("clip", "recording")
DUPLICATE_ACTIONS = ("warn", "merge")

#: The column every unit has that names its recording: the group of ``--group ""``.
RECORDING_COLUMN = "recording_id"
#: Columns the confound check always tries (when present and not constant).
DEFAULT_CONFOUNDS = ("sample_rate", "dataset", "device")
#: Above this AUROC from a metadata column alone, the label counts as confounded with it.
CONFOUND_AUROC = 0.8
#: Regression: above this out-of-fold R^2 from a metadata column alone, likewise.
CONFOUND_R2 = 0.5
#: A probe on fewer units than this says nothing; refuse rather than report noise.
MIN_UNITS = 10
#: A numeric target with more distinct values than this is a regression target (task auto).
MAX_CLASSES_AUTO = 10
#: Inverse regularisation strengths tried by the inner grouped CV of the logistic regression.
DEFAULT_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: Ridge penalties tried by the inner grouped CV of the regression probe.
DEFAULT_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
#: Inner folds used to choose C (or alpha) on each outer training set.
INNER_FOLDS = 3


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of one probe run.

    ``target``: the metadata column to predict (``label``, or any study column).
    ``group``: the column whose values must never be split between training and test
    (``subject_id``); clips without one are grouped by recording; empty: the recording
    (stored as :data:`RECORDING_COLUMN`). ``where``: conditions
    ``COLUMN OP VALUE`` (see :mod:`hear_features.where`), all of which must hold.
    ``at``: the time the labels are read as of (point in time; default: now).
    ``positive``: the positive class of a binary task (default: the rarer class); with
    more than two classes, ``positive`` against the rest. ``duplicate_distance``: cosine
    distance below which two units of different groups count as near-duplicates;
    ``duplicates="merge"`` puts their groups together so they never straddle a split.
    """

    target: str
    group: str = "subject_id"
    where: tuple[str, ...] = ()
    task: Task = "auto"
    level: Level = "clip"
    positive: str | None = None
    at: dt.datetime | None = None
    folds: int = 5
    repeats: int = 3
    seed: int = 0
    bootstrap: int = 1000
    confounds: tuple[str, ...] = ()
    duplicate_distance: float = 0.01
    duplicates: DuplicateAction = "warn"
    acoustic: bool = True
    cs: tuple[float, ...] = DEFAULT_CS
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    max_iter: int = 500

    def __post_init__(self) -> None:
        if not self.group.strip():  # frozen: set once, here, so reports name the column
            object.__setattr__(self, "group", RECORDING_COLUMN)
        if not self.target:
            raise ProbeError("give a target column (--target)")
        if self.task not in TASKS:
            raise ProbeError(f"--task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if self.level not in LEVELS:
            raise ProbeError(f"--level must be clip or recording, not {self.level!r}")
        if self.duplicates not in DUPLICATE_ACTIONS:
            raise ProbeError(f"--duplicates must be warn or merge, not {self.duplicates!r}")
        if not 2 <= self.folds <= 100:
            raise ProbeError(f"--folds must be between 2 and 100, not {self.folds}")
        if not 1 <= self.repeats <= 100:
            raise ProbeError(f"--repeats must be between 1 and 100, not {self.repeats}")
        if not 0 <= self.bootstrap <= 100_000:
            raise ProbeError(f"--bootstrap must be between 0 and 100000, not {self.bootstrap}")
        if not 0 <= self.duplicate_distance < 2:
            raise ProbeError(
                "--duplicate-distance is a cosine distance in [0, 2), "
                f"not {self.duplicate_distance}"
            )
        if self.seed < 0:
            raise ProbeError(f"--seed must be >= 0, not {self.seed}")
        if not self.cs or min(self.cs) <= 0 or not self.alphas or min(self.alphas) <= 0:
            raise ProbeError("the regularisation grids must hold positive numbers")
        if self.at is not None and self.at.tzinfo is None:
            raise ProbeError("the point in time (--at) must carry a time zone (or be UTC)")

    def split_seeds(self) -> list[int]:
        """One seed per repeat of the outer k-fold."""
        return [self.seed + r for r in range(self.repeats)]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat() if self.at is not None else None
        data["where"] = list(self.where)
        data["confounds"] = list(self.confounds)
        data["cs"] = list(self.cs)
        data["alphas"] = list(self.alphas)
        return data
