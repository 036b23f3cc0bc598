"""Grouped k-fold splits: no group ever has units on both sides of a split.

Outer folds: scikit-learn's ``StratifiedGroupKFold`` for classification (class
proportions kept close to the whole), ``GroupKFold`` for regression, shuffled with one
seed per repeat. Inner folds (choosing the regularisation on an outer training set)
follow the same rule among the training groups only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from hear_features.errors import ProbeError
from hear_features.probe.config import INNER_FOLDS, MIN_UNITS
from hear_features.probe.target import Target

#: Prefix of the group given to a unit whose group column is empty: its recording.
RECORDING_GROUP = "recording:"


def groups_of(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, int]:
    """The group of every unit (text), and how many units fell back to their recording.

    A unit without a value in ``column`` is grouped by its recording; and groups that
    share a recording are joined, so the windows of one recording never straddle a split.
    """
    if column not in frame.columns:
        raise ProbeError(
            f"unknown group column {column!r}; the selection has: "
            f"{', '.join(sorted(str(c) for c in frame.columns if c != 'unit_id'))}"
        )
    values = frame[column]
    missing = values.isna().to_numpy() | values.astype(str).str.strip().eq("").to_numpy()
    groups = values.astype(str).to_numpy(dtype=object)
    recordings = frame["recording_id"].astype(str).to_numpy(dtype=object)
    groups[missing] = RECORDING_GROUP + recordings[missing]
    # Windows of one recording always share a group, whatever the column says.
    codes = pd.factorize(recordings)[0]
    order = np.argsort(codes, kind="stable")
    same = codes[order][1:] == codes[order][:-1]
    pairs = zip(order[:-1][same].tolist(), order[1:][same].tolist(), strict=True)
    return merge_groups(groups.astype(str), pairs), int(missing.sum())


def merge_groups(groups: np.ndarray, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Groups joined along ``pairs`` of unit indices (union-find).

    A joined group is named after its members: ``a+b``, or ``a+5 more`` beyond two.
    """
    names, codes = np.unique(groups, return_inverse=True)
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(int(codes[a])), root(int(codes[b]))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[str]] = {}
    for i, name in enumerate(names):
        members.setdefault(root(i), []).append(str(name))
    label = {r: _joined(sorted(m)) for r, m in members.items()}
    return np.array([label[root(int(c))] for c in codes], dtype=str)


def _joined(members: list[str]) -> str:
    if len(members) <= 2:
        return "+".join(members)
    return f"{members[0]}+{len(members) - 1} more"


def check_design(target: Target, groups: np.ndarray, folds: int, group_column: str) -> None:
    """Refuse selections a grouped k-fold cannot evaluate, in words a user can act on."""
    n = len(target.y)
    if n < MIN_UNITS:
        raise ProbeError(
            f"only {n} units selected; a probe needs at least {MIN_UNITS} "
            "(check --where, --at and --level)"
        )
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise ProbeError(
            f"only {n_groups} groups ({group_column}) for {folds} folds: "
            f"use --folds {max(2, n_groups)} or fewer, or a finer --group"
            if n_groups >= 2
            else f"all units are in one group ({group_column}); nothing can be held out"
        )
    if not target.is_classification:
        return
    largest = int(np.bincount(target.y).max())
    if largest < folds:
        raise ProbeError(
            f"the largest class has only {largest} units, fewer than {folds} folds: "
            f"use --folds {max(2, largest)} or fewer"
        )
    for index, name in enumerate(target.classes):
        in_class = np.unique(groups[target.y == index])
        if len(in_class) < 2:
            raise ProbeError(
                f"class {name!r} of {target.column!r} occurs in only {len(in_class)} group "
                f"({group_column}); it cannot be both learned and tested on other groups"
            )


def outer_folds(target: Target, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The test fold (0..folds-1) of every unit, for one repeat."""
    fold = np.full(len(target.y), -1, dtype=np.int64)
    for k, (_, test) in enumerate(_split(target, folds, seed, groups)):
        fold[test] = k
    if (fold < 0).any():  # cannot happen with scikit-learn's splitters; keep it loud
        raise RuntimeError("a unit was assigned to no fold")
    return fold


def check_test_folds(target: Target, folds: np.ndarray) -> None:
    """Refuse fold plans ``[R, n]`` where some repeat has no test fold holding two
    classes: classification metrics are taken per test fold and would be undefined."""
    if not target.is_classification:
        return
    for r, fold in enumerate(folds):
        if not any(len(np.unique(target.y[fold == k])) >= 2 for k in np.unique(fold)):
            raise ProbeError(
                f"no test fold of repeat {r + 1} holds two classes of {target.column!r} "
                "(each holds groups of one class), so no metric can be computed per fold; "
                "use fewer --folds"
            )


def inner_splits(
    target: Target, y: np.ndarray, groups: np.ndarray, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped (stratified) splits of one outer training set, for choosing C or alpha."""
    k = min(INNER_FOLDS, len(np.unique(groups)))
    if target.is_classification:  # scikit-learn refuses more folds than the largest class
        k = min(k, int(np.bincount(y).max()))
    if k < 2:
        raise ProbeError(
            "an outer training set is too small to choose the regularisation "
            "(one group, or one unit per class); use fewer --folds"
        )
    inner = Target(target.column, target.task, y, target.classes, target.positive)
    return _split(inner, k, seed, groups)


def _split(
    target: Target, folds: int, seed: int, groups: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The splits as a list. StratifiedGroupKFold warns when a class has fewer groups
    than folds: expected in small studies (the report gives the class counts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splitter = _splitter(target, folds, seed)
        return list(splitter.split(np.zeros(len(target.y)), target.y, groups))


def _splitter(target: Target, folds: int, seed: int) -> GroupKFold | StratifiedGroupKFold:
    if target.is_classification:
        return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
