"""The probe, end to end: select, check, audit, split, fit, measure, report.

:func:`probe` works on a feature repository; :func:`evaluate` on a
:class:`~hear_features.probe.selection.Selection` already in memory (an exported
training set, a benchmark). Both return a :class:`~hear_features.probe.report.ProbeReport`
and write it to ``out`` when given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from feast import FeatureStore

from hear_features.audio.sources import AudioSources
from hear_features.errors import ProbeError
from hear_features.featurestore.config import audio_sources
from hear_features.featurestore.repo import open_store
from hear_features.probe import acoustic, audit, metrics, models, report, selection, splits
from hear_features.probe import target as target_mod
from hear_features.probe.config import CONFOUND_AUROC, CONFOUND_R2, DEFAULT_CONFOUNDS, ProbeConfig
from hear_features.probe.selection import UNIT, Selection

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def probe(
    repo: str | Path | FeatureStore | None,
    config: ProbeConfig,
    out: str | Path | None = None,
    *,
    progress: Progress | None = None,
) -> report.ProbeReport:
    """Run a linear probe on the embedded clips of a feature repository.

    ``repo``: a repository folder (``None``: ``.`` or ``./feature_repo``) or an open
    ``FeatureStore``. Labels and metadata are read as of ``config.at`` (point in time);
    audio for the acoustic baseline is read under the repository's ``audio_roots``.
    Raises :class:`~hear_features.errors.ProbeError` for anything the selection cannot
    support (unknown column, one class, fewer groups than folds, too few clips).
    """
    if out is not None:
        report.check_out(Path(out))
    store = repo if isinstance(repo, FeatureStore) else open_store(Path(repo) if repo else None)
    timings: dict[str, float] = {}
    with _timed(timings, "select (point-in-time join)", progress):
        chosen = selection.from_store(store, config.at)
    return evaluate(
        chosen,
        config,
        out=out,
        sources=audio_sources(store.config),
        progress=progress,
        timings=timings,
    )


def evaluate(
    chosen: Selection,
    config: ProbeConfig,
    *,
    out: str | Path | None = None,
    sources: AudioSources | None = None,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
) -> report.ProbeReport:
    """Run the probe on ``chosen`` (filtered by ``config.where`` first).

    Raises :class:`~hear_features.errors.ProbeError` before any work when ``out`` cannot
    be written (see :func:`~hear_features.probe.report.check_out`).
    """
    if out is not None:
        report.check_out(Path(out))
    timings = {} if timings is None else timings
    chosen, target, missing = _units(chosen, config)
    groups, fallback = splits.groups_of(chosen.frame, config.group)
    units = chosen.frame[UNIT].astype(str).to_numpy()
    splits.check_design(target, groups, config.folds, config.group)
    warnings: list[str] = []
    if fallback:
        warnings.append(
            f"{fallback} unit(s) have no {config.group}; each was grouped with its recording"
        )

    with _timed(timings, "audit: near-duplicates (FAISS)", progress):
        duplicates = audit.near_duplicates(chosen.vectors, units, groups, config.duplicate_distance)
    duplicates.action = config.duplicates
    if config.duplicates == "merge" and duplicates.pairs:
        groups = splits.merge_groups(groups, audit.pair_indices(duplicates, units))
        splits.check_design(target, groups, config.folds, f"{config.group}, after merging")
    folds = np.stack(
        [splits.outer_folds(target, groups, config.folds, s) for s in config.split_seeds()]
    )
    splits.check_test_folds(target, folds)
    pairs = audit.pair_indices(duplicates, units)
    duplicates.across_folds = sum(bool((folds[:, a] != folds[:, b]).any()) for a, b in pairs)
    warnings += _duplicate_warnings(duplicates, config)

    with _timed(timings, "audit: confounds", progress):
        columns = audit.confound_columns(chosen.frame, DEFAULT_CONFOUNDS, config.confounds)
        confounds = audit.confounds(chosen.frame, target, folds, groups, columns, config)
    warnings += _confound_warnings(confounds, target)

    results, skipped = _fit(
        chosen, units, target, folds, groups, config, sources, timings, progress
    )
    if skipped and config.acoustic:
        warnings.append(f"acoustic baseline skipped: {skipped}")
    warnings += [
        f"{r.not_converged} fit(s) of the {r.name} probe stopped at max_iter "
        f"({config.max_iter}) before converging"
        for r in results
        if r.not_converged
    ]

    with _timed(timings, "metrics + bootstrap", progress):
        draws = (
            metrics.group_draws(groups, config.bootstrap, config.seed) if config.bootstrap else None
        )
        table = {
            r.name: {
                m: metrics.estimate(m, target.task, target.y, r.scores, folds, draws)
                for m in metrics.METRICS[target.task]
            }
            for r in results
        }
    summary = {
        **chosen.source,
        **chosen.counts,
        "units_without_target": missing,
        "units": len(units),
        "groups": len(np.unique(groups)),
        "class_counts": target.class_counts(),
    }
    result = report.ProbeReport(
        config=config,
        target=target,
        model_id=chosen.model_id,
        level=chosen.level,
        selection=summary,
        units=units,
        groups=groups,
        folds=folds,
        results=results,
        metrics=table,
        duplicates=duplicates,
        confounds=confounds,
        acoustic_skipped=skipped,
        warnings=warnings,
        versions=report.versions(),
        timings=timings,
    )
    if out is not None:
        with _timed(timings, "report + plots", progress):
            try:
                result.write(Path(out))
            except OSError as exc:  # checked before the work; a full disk, say, remains
                raise ProbeError(f"cannot write the report to {out}: {exc}") from exc
    return result


def _units(chosen: Selection, config: ProbeConfig) -> tuple[Selection, target_mod.Target, int]:
    """The units to probe (filtered, with a target value, at the level asked) and their
    target; also how many were left out for having no target value."""
    chosen = selection.filtered(chosen, list(config.where))
    has_target = target_mod.present(chosen.frame, config)
    missing = int((~has_target).sum())
    if missing:
        chosen = selection.subset(chosen, has_target)
    if config.level == "recording":
        chosen = selection.to_recordings(chosen, [config.target, config.group])
    return chosen, target_mod.resolve(chosen.frame[config.target], config, missing), missing


def _fit(
    chosen: Selection,
    units: np.ndarray,
    target: target_mod.Target,
    folds: np.ndarray,
    groups: np.ndarray,
    config: ProbeConfig,
    sources: AudioSources | None,
    timings: dict[str, float],
    progress: Progress | None,
) -> tuple[list[models.OutOfFold], str | None]:
    """The embedding probe, the acoustic baseline (when its audio can be read) and chance,
    on the same folds; and why the acoustic baseline was skipped, if it was."""
    with _timed(timings, "probe: embedding", progress):
        results = [models.linear("embedding", chosen.vectors, target, folds, groups, config)]
    skipped: str | None = "turned off (--no-acoustic)"
    if config.acoustic:
        with _timed(timings, "acoustic baseline: log-mel statistics", progress):
            features = acoustic.log_mel_features(chosen.clips, units, sources)
            skipped = features.skipped
            if features.features is not None:
                results.append(
                    models.linear("acoustic", features.features, target, folds, groups, config)
                )
    results.append(models.chance(target, folds))
    return results, skipped


def _duplicate_warnings(duplicates: audit.DuplicateAudit, config: ProbeConfig) -> list[str]:
    if not duplicates.pairs:
        return []
    first = duplicates.pairs[0]
    kept = (
        "their groups were merged"
        if config.duplicates == "merge"
        else f"{duplicates.across_folds} straddle folds; --duplicates merge keeps them together"
    )
    return [
        f"{len(duplicates.pairs)} near-duplicate pair(s) across {config.group} groups "
        f"(cosine distance < {config.duplicate_distance:g}), e.g. "
        f"{first.unit_a} ({first.group_a}) ~ {first.unit_b} ({first.group_b}): {kept}"
    ]


def _confound_warnings(confounds: list[audit.Confound], target: target_mod.Target) -> list[str]:
    limit = CONFOUND_AUROC if target.is_classification else CONFOUND_R2
    return [
        f"{target.column!r} is confounded with {c.column!r}: that column alone "
        f"predicts it with {c.metric.upper()} {c.score:.3f} (> {limit:g})"
        for c in confounds
        if c.confounded
    ]


@contextmanager
def _timed(timings: dict[str, float], stage: str, progress: Progress | None) -> Iterator[None]:
    if progress is not None:
        progress(stage)
    log.info("probe: %s", stage)
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start
