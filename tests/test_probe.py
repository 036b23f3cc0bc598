"""``hear-features probe``: grouped linear probes, the leakage audit, the report, bad input.

Most cases build their data in the test (vectors with a known amount of class signal,
or real audio through the real stand-in encoder) and run the probe in memory with
:func:`hear_features.probe.evaluate`; the store path (point-in-time selection, ``--where``
on the views' columns, the CLI, the acoustic baseline reading registered audio) runs on
the shared ``workflow`` repository.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from hear_features import where as where_mod
from hear_features.cli import app
from hear_features.errors import ProbeError
from hear_features.featurestore.repo import open_store
from hear_features.probe import ProbeConfig, evaluate, from_frame, from_store
from hear_features.probe import metrics as probe_metrics
from hear_features.probe.selection import Selection, filtered, to_recordings
from hear_features.synthetic import cough, speech
from tests.conftest import T1, T2, Workflow, feast

FAST = {"repeats": 2, "bootstrap": 300, "acoustic": False}
runner = CliRunner()


def synthetic(
    subjects: int = 24,
    per_subject: int = 6,
    dim: int = 32,
    signal: float = 1.5,
    seed: int = 0,
    shuffle_labels: bool = False,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Clips of subjects with one class each; vectors = class centre * signal + noise.

    ``shuffle_labels``: labels that carry no information: within each true class, half
    the subjects get each label (a plain permutation of 30 subjects' labels can agree
    with the truth for 22 of them, which a probe rightly finds).
    """
    rng = np.random.default_rng(seed)
    classes = np.array(["healthy", "sick"])[np.arange(subjects) % 2]
    centres = rng.standard_normal((2, dim))
    subject = np.repeat(np.arange(subjects), per_subject)
    truth = (np.arange(subjects) % 2)[subject]
    vectors = centres[truth] * signal + rng.standard_normal((len(subject), dim)) * 2.0
    given = classes[subject]
    if shuffle_labels:  # independent of the truth: each true class gets half of each label
        shuffled = classes.copy()
        for c in (0, 1):
            members = rng.permutation(np.flatnonzero(np.arange(subjects) % 2 == c))
            shuffled[members] = np.array(["healthy", "sick"])[(np.arange(len(members)) + c) % 2]
        given = shuffled[subject]
    frame = pd.DataFrame(
        {
            "clip_id": [f"clip-{i:05d}" for i in range(len(subject))],
            "recording_id": [f"rec-{i // 2:05d}" for i in range(len(subject))],
            "subject_id": [f"subject-{s}" for s in subject],
            "label": given,
            "sample_rate": 16_000,
            "dataset": "synthetic",
        }
    )
    return frame, vectors.astype(np.float32)


def selection_of(frame: pd.DataFrame, vectors: np.ndarray) -> Selection:
    return from_frame(frame, vectors, model_id="test/vectors")


# ---- metrics, splits, where: the parts -------------------------------------------------


def test_group_bootstrap_metrics_equal_scikit_learn_with_the_same_weights() -> None:
    from sklearn.metrics import (
        balanced_accuracy_score,
        mean_absolute_error,
        mean_absolute_percentage_error,
        roc_auc_score,
        roc_curve,
    )

    rng = np.random.default_rng(1)
    n = 400
    subjects = rng.integers(0, 40, n)
    group, counts = probe_metrics.group_draws(subjects, 6, seed=3)  # 6 resamples of groups
    weights = counts[:, group]  # what each unit weighs in each resample
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.4 * y, 2)  # rounded: many ties
    distinct = rng.random(n) + 0.4 * y  # no ties: the fast path

    def sens(score: np.ndarray, w: np.ndarray) -> float:
        fpr, tpr, _ = roc_curve(y, score, sample_weight=w, drop_intermediate=False)
        return float(tpr[fpr <= 0.05 + 1e-12].max())

    for score in (s, distinct):
        expected = {
            "auroc": [roc_auc_score(y, score, sample_weight=w) for w in weights],
            "balanced_accuracy": [
                balanced_accuracy_score(y, (score > 0.5).astype(int), sample_weight=w)
                for w in weights
            ],
            "sensitivity_at_95_specificity": [sens(score, w) for w in weights],
        }
        for metric, values in expected.items():
            f = probe_metrics.weighted_metric(metric, "binary", y, score, group)
            np.testing.assert_allclose(f(counts), values, err_msg=metric)
            once = f(np.ones((1, group.max() + 1)))[0]
            assert once == pytest.approx(probe_metrics.point(metric, "binary", y, score))

    y3 = rng.integers(0, 3, n)
    p3 = rng.dirichlet([1, 1, 1], n)
    f = probe_metrics.weighted_metric("auroc", "multiclass", y3, p3, group)
    np.testing.assert_allclose(
        f(counts),
        [roc_auc_score(y3, p3, sample_weight=w, multi_class="ovr") for w in weights],
    )
    f = probe_metrics.weighted_metric("balanced_accuracy", "multiclass", y3, p3, group)
    np.testing.assert_allclose(
        f(counts), [balanced_accuracy_score(y3, p3.argmax(1), sample_weight=w) for w in weights]
    )
    yr = rng.uniform(1, 5, n)
    pr = yr + rng.standard_normal(n)
    for metric, fn in (("mae", mean_absolute_error), ("mape", mean_absolute_percentage_error)):
        f = probe_metrics.weighted_metric(metric, "regression", yr, pr, group)
        np.testing.assert_allclose(f(counts), [fn(yr, pr, sample_weight=w) for w in weights])


def test_where_conditions_are_typed_and_never_evaluated() -> None:
    frame = pd.DataFrame(
        {
            "label": ["cough", "speech", "cough, wet", None],
            "age": [17, 18, 70, 40],
            "smoker": [True, False, True, False],
            "visit": pd.to_datetime(
                ["2024-01-01", "2024-06-01", "2025-01-01", "2023-01-01"], utc=True
            ),
        }
    )

    def rows(*conditions: str) -> list[int]:
        return np.flatnonzero(
            where_mod.apply(frame, [where_mod.parse(c) for c in conditions])
        ).tolist()

    assert rows("age >= 18") == [1, 2, 3]
    assert rows("age>=18", "label = cough") == []  # 'cough' is not 'cough, wet'
    assert rows("label in cough, speech") == [0, 1]
    assert rows("label in 'cough, wet', speech") == [1, 2]
    assert rows("label != cough") == [1, 2]  # a missing label matches nothing
    assert rows("label not in [speech]") == [0, 2]
    assert rows("smoker = yes") == [0, 2]
    assert rows("visit < 2024-03-01") == [0, 3]
    assert rows("age == 18.0") == [1]
    for bad, message in (
        ("age >= old", "is not a number"),
        ("label > b", "holds text"),
        ("smoker = maybe", "true or false"),
        ("visit < yesterday", "ISO 8601"),
        ("label", "COLUMN OP VALUE"),
        ("label =", "no value"),
        ("__import__('os').system('true') = 1", "no column"),
    ):
        with pytest.raises(ProbeError, match=message):
            where_mod.apply(frame, [where_mod.parse(bad)])
    # A value is only ever a value: quotes, semicolons and SQL stay text.
    assert rows("label = x'; DROP TABLE clips; --") == []


def test_a_group_never_spans_training_and_test() -> None:
    frame, vectors = synthetic(subjects=17, per_subject=5)
    frame["subject_id"] = np.where(np.arange(len(frame)) % 7 == 0, None, frame["subject_id"])
    report = evaluate(
        selection_of(frame, vectors),
        ProbeConfig(
            target="label", folds=4, repeats=3, **{k: v for k, v in FAST.items() if k != "repeats"}
        ),
    )
    assert "have no subject_id" in report.warnings[0]  # grouped with their recording
    assert report.folds.shape == (3, len(frame))
    for fold in report.folds:
        for group in np.unique(report.groups):
            assert len(np.unique(fold[report.groups == group])) == 1, group
        assert sorted(np.unique(fold)) == [0, 1, 2, 3]
    # Units without a subject are grouped by recording: both windows share a fold.
    recordings = frame["recording_id"].to_numpy()
    for fold in report.folds:
        for rec in np.unique(recordings):
            assert len(np.unique(fold[recordings == rec])) == 1


# ---- what a probe finds ------------------------------------------------------------------


def test_separable_classes_give_a_high_auroc_and_a_reproducible_report(tmp_path: Path) -> None:
    frame, vectors = synthetic(signal=1.5)
    config = ProbeConfig(target="label", folds=4, **FAST)
    report = evaluate(selection_of(frame, vectors), config, out=tmp_path / "a")
    auroc = report.estimate("embedding", "auroc")
    assert auroc.mean >= 0.95
    assert auroc.ci_low is not None and auroc.ci_low >= 0.9
    assert report.estimate("chance", "auroc").mean == pytest.approx(0.5)
    assert report.target.positive in ("healthy", "sick")

    data = json.loads((tmp_path / "a" / "report.json").read_text())
    assert data["model_id"] == "test/vectors"
    assert data["seeds"]["outer_folds"] == [0, 1]
    assert {"scikit-learn", "numpy", "python"} <= set(data["versions"])
    assert data["metrics"]["embedding"]["auroc"]["ci95"][0] >= 0.9
    preds = data["predictions"]
    assert len(preds["unit_id"]) == len(frame) == len(preds["repeats"][0]["fold"])
    assert set(preds["repeats"][0]["scores"]) == {"embedding", "chance"}
    assert data["selection"]["class_counts"] == {"healthy": 72, "sick": 72}
    for png in ("roc.png", "confusion_matrix.png", "reliability.png"):
        assert (tmp_path / "a" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "a" / "report.md").read_text()
    assert "| embedding | 32 |" in md and "![roc](roc.png)" in md

    # Same inputs, same numbers: every byte of the report and of the plots.
    evaluate(selection_of(frame, vectors), config, out=tmp_path / "b")
    for name in ("report.json", "report.md", "roc.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_shuffled_labels_give_an_auroc_interval_containing_one_half() -> None:
    frame, vectors = synthetic(signal=1.5, shuffle_labels=True, subjects=30)
    report = evaluate(selection_of(frame, vectors), ProbeConfig(target="label", **FAST))
    auroc = report.estimate("embedding", "auroc")
    assert auroc.contains(0.5), auroc
    assert auroc.ci_high - auroc.ci_low > 0.1  # an honest width, not a point


def constant_vectors(positives: int, subjects: int = 20, n: int = 120) -> Selection:
    """Information-free units: every vector the same; ``positives`` clips, one per subject."""
    label = np.where(np.arange(n) < positives, "sick", "healthy")
    frame = pd.DataFrame(
        {
            "clip_id": [f"c{i:03d}" for i in range(n)],
            "subject_id": [f"s{i % subjects}" for i in range(n)],
            "label": label,
        }
    )
    return selection_of(frame, np.ones((n, 8), dtype=np.float32))


def test_information_free_vectors_score_chance_not_below() -> None:
    # Strong regularisation scores every unit with its training fold's prior; ranked
    # across folds, those priors run against the units' own labels (pooled: 0.44, CI
    # [0.38, 0.50)). Per test fold, as scikit-learn's cross_validate scores, it is 0.5.
    report = evaluate(
        constant_vectors(12), ProbeConfig(target="label", folds=5, repeats=2, bootstrap=300)
    )
    auroc = report.estimate("embedding", "auroc")
    assert auroc.contains(0.5) and auroc.mean == pytest.approx(0.5, abs=0.02), auroc
    assert report.estimate("embedding", "balanced_accuracy").mean == pytest.approx(0.5)


def test_metrics_are_taken_per_test_fold_and_so_is_their_bootstrap() -> None:
    # Scores that are each fold's training prior (what a model without information
    # predicts): 2 positives in 2 subjects, 5 folds. Pooled, AUROC would be about 0.1.
    y = (np.arange(120) < 2).astype(np.int64)
    groups = np.arange(120) % 20
    fold = groups % 5
    prior = np.array([y[fold != k].mean() for k in range(5)])[fold]
    assert probe_metrics.point("auroc", "binary", y, prior) < 0.3  # the pooled trap
    draws = probe_metrics.group_draws(groups, 200, seed=0)
    for metric in ("auroc", "balanced_accuracy"):
        e = probe_metrics.estimate(metric, "binary", y, prior[None], fold[None], draws)
        assert e.mean == pytest.approx(0.5) and e.ci_low == e.ci_high == pytest.approx(0.5)
    # Separable scores stay perfect, per fold and in every resample.
    e = probe_metrics.estimate("auroc", "binary", y, y + prior[None], fold[None], draws)
    assert e.mean == 1.0 and e.ci_low == 1.0
    # A fold without both classes does not count; the others are averaged.
    score = np.where(fold == 0, 1.0 - y, y.astype(float))
    values = [probe_metrics.point("auroc", "binary", y, score, fold)]
    assert values == [pytest.approx(0.5)]  # folds 0 (AUROC 0) and 1 (1): mean 0.5
    # The ROC plot averages the per-fold curves too: the diagonal, not a curve below it.
    from hear_features.probe.plots import _FPR, _mean_roc

    np.testing.assert_allclose(_mean_roc(y == 1, prior[None], fold[None]), _FPR)


def test_regression_mae_follows_the_signal(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    subjects, per, dim = 30, 4, 16
    subject = np.repeat(np.arange(subjects), per)
    vectors = rng.standard_normal((subjects * per, dim)).astype(np.float32)
    weights = rng.standard_normal(dim)
    maes = {}
    for name, noise in (("strong", 0.2), ("weak", 2.0)):
        age = 50 + 5 * (vectors @ weights) + noise * 5 * rng.standard_normal(len(subject))
        frame = pd.DataFrame(
            {
                "clip_id": [f"c{i}" for i in range(len(subject))],
                "subject_id": subject.astype(str),
                "age": age,
            }
        )
        report = evaluate(
            selection_of(frame, vectors), ProbeConfig(target="age", **FAST), out=tmp_path / name
        )
        assert report.target.task == "regression"
        assert (tmp_path / name / "predicted_vs_true.png").exists()
        maes[name] = report.estimate("embedding", "mae").mean
        maes[f"chance-{name}"] = report.estimate("chance", "mae").mean
        assert report.estimate("embedding", "mape").mean < report.estimate("chance", "mape").mean
    assert maes["strong"] < maes["weak"] < maes["chance-weak"]
    assert maes["strong"] < 0.25 * maes["chance-strong"]


def test_a_label_predicted_by_sample_rate_alone_is_flagged_as_confounded(tmp_path: Path) -> None:
    frame, vectors = synthetic(signal=0.0)  # the vectors know nothing
    frame["sample_rate"] = np.where(frame["label"] == "sick", 8_000, 44_100)
    frame["site"] = "one"  # a study column the user names: constant, cannot confound
    config = ProbeConfig(target="label", confounds=("site",), **FAST)
    report = evaluate(selection_of(frame, vectors), config, out=tmp_path)
    by_column = {c.column: c for c in report.confounds}
    assert by_column["sample_rate"].confounded and by_column["sample_rate"].score == 1.0
    assert not by_column["dataset"].confounded and by_column["dataset"].note == "one value only"
    assert not by_column["site"].confounded
    assert any("confounded with 'sample_rate'" in w for w in report.warnings)
    assert "confounded with 'sample_rate'" in (tmp_path / "report.md").read_text()
    with pytest.raises(ProbeError, match="unknown confound column"):
        evaluate(selection_of(frame, vectors), ProbeConfig(target="label", confounds=("x",)))


def test_a_recording_copied_under_another_subject_is_a_near_duplicate(
    tmp_path: Path, encoder
) -> None:  # type: ignore[no-untyped-def]
    """Real audio through the real stand-in encoder: a re-encoded, quieter copy of one
    subject's cough, registered as another subject's, is found and named."""
    from hear_features.clips import iter_clips

    rng = np.random.default_rng(8)
    rows, windows = [], []

    def add(path: Path, subject: str, label: str) -> None:
        for ref, samples in iter_clips(path):
            rows.append(
                {
                    "clip_id": ref.clip_id,
                    "recording_id": ref.recording_id,
                    "subject_id": subject,
                    "label": label,
                }
            )
            windows.append(samples)

    for s in range(4):
        for take in range(3):
            for label, make in (("cough", cough), ("speech", speech)):
                path = tmp_path / f"s{s}_{label}_{take}.wav"
                sf.write(path, make(rng, 16_000, subject=s).astype(np.float32), 16_000)
                add(path, f"subject-{s}", label)
    original = tmp_path / "s0_cough_0.wav"
    copy = tmp_path / "copy.flac"
    samples, sr = sf.read(original)
    sf.write(copy, samples * 0.7, sr, subtype="PCM_24")  # re-encoded, 3 dB quieter

    before = len(rows)
    add(copy, "subject-3", "cough")
    copied = {r["clip_id"] for r in rows[before:]}
    vectors = encoder.encode(np.stack(windows))
    frame = pd.DataFrame(rows)
    report = evaluate(
        selection_of(frame, vectors),
        ProbeConfig(target="label", folds=4, **FAST),
        out=tmp_path / "r",
    )
    pairs = report.duplicates.pairs
    assert pairs, "the copy was not found"
    assert all({p.group_a, p.group_b} == {"subject-0", "subject-3"} for p in pairs)
    assert copied <= {p.unit_a for p in pairs} | {p.unit_b for p in pairs}
    assert all(p.distance < 0.01 for p in pairs)
    assert report.duplicates.across_folds >= 1  # subjects 0 and 3 were split at least once
    assert any("near-duplicate" in w for w in report.warnings)
    listed = json.loads((tmp_path / "r" / "report.json").read_text())["audit"]["near_duplicates"]
    assert listed["pairs"][0]["unit_a"] in {p.unit_a for p in pairs}

    merged = evaluate(
        selection_of(frame, vectors),
        ProbeConfig(target="label", folds=3, duplicates="merge", **FAST),
    )
    assert "subject-0+subject-3" in set(merged.groups.tolist())
    assert merged.duplicates.across_folds == 0


def test_recording_level_averages_the_windows_of_each_recording(tmp_path: Path) -> None:
    frame, vectors = synthetic(subjects=21, per_subject=4)
    subject = frame["subject_id"].str.removeprefix("subject-").astype(int)
    frame["label"] = np.array(["breath", "cough", "speech"])[subject % 3]
    vectors[:, :3] += 6 * np.eye(3, dtype=np.float32)[subject % 3]
    report = evaluate(
        selection_of(frame, vectors),
        ProbeConfig(target="label", level="recording", folds=3, **FAST),
        out=tmp_path,
    )
    assert report.target.task == "multiclass" and report.level == "recording"
    assert len(report.units) == len(frame) // 2  # two windows per recording
    assert report.units[0] == "rec-00000"
    assert report.estimate("embedding", "auroc").mean > 0.9
    assert report.estimate("chance", "auroc").mean == pytest.approx(0.5)
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert len(data["predictions"]["repeats"][0]["scores"]["embedding"][0]) == 3
    assert data["selection"]["recordings"] == len(report.units)
    aggregated = to_recordings(selection_of(frame, vectors), ["label"])
    first = vectors[frame["recording_id"].to_numpy() == "rec-00000"].mean(axis=0)
    np.testing.assert_allclose(aggregated.vectors[0], first, rtol=1e-6)
    frame.loc[0, "label"] = "speech"  # windows of one recording disagree
    with pytest.raises(ProbeError, match="differs between the windows of 1 recording"):
        to_recordings(selection_of(frame, vectors), ["label"])


# ---- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"target": "diagnosis"}, "unknown target column 'diagnosis'"),
        ({"target": "label", "where": ("label = sick",)}, "has one class ('sick')"),
        ({"target": "label", "folds": 30}, "only 24 groups (subject_id) for 30 folds"),
        (
            {"target": "label", "where": ("clip_id in clip-00000, clip-00001, clip-00006",)},
            "only 3 units selected",
        ),
        ({"target": "label", "group": "site"}, "unknown group column 'site'"),
        ({"target": "label", "task": "regression"}, "is not numeric"),
        ({"target": "label", "positive": "maybe"}, "is not a class"),
        ({"target": "label", "where": ("dataset = other",)}, "no clip meets"),
    ],
)
def test_selections_a_probe_cannot_use_are_refused_with_a_reason(
    config: dict[str, object], message: str
) -> None:
    frame, vectors = synthetic()
    with pytest.raises(ProbeError, match=re.escape(message)):
        evaluate(selection_of(frame, vectors), ProbeConfig(**config, **FAST))  # type: ignore[arg-type]


def test_a_class_seen_in_one_group_only_is_refused() -> None:
    frame, vectors = synthetic()
    frame.loc[frame["subject_id"] == "subject-3", "label"] = "rare"
    with pytest.raises(ProbeError, match="class 'rare' of 'label' occurs in only 1 group"):
        evaluate(selection_of(frame, vectors), ProbeConfig(target="label", **FAST))


def test_folds_that_each_hold_one_class_are_refused() -> None:
    # 4 subjects of one class each in 4 folds: no test fold can be scored on its own.
    frame, vectors = synthetic(subjects=4, per_subject=6)
    with pytest.raises(ProbeError, match="no test fold of repeat 1 holds two classes"):
        evaluate(selection_of(frame, vectors), ProbeConfig(target="label", folds=4, **FAST))


def test_an_infinite_regression_target_is_refused_naming_column_and_count() -> None:
    frame, vectors = synthetic()
    frame["fev1"] = np.linspace(1.0, 4.0, len(frame))
    frame.loc[[3, 40], "fev1"] = [np.inf, -np.inf]
    with pytest.raises(ProbeError, match=r"target 'fev1' has 2 infinite value\(s\)"):
        evaluate(selection_of(frame, vectors), ProbeConfig(target="fev1", **FAST))


def test_positive_with_more_classes_is_that_class_against_the_rest() -> None:
    frame, vectors = synthetic(subjects=12, per_subject=4)
    frame["label"] = np.array(["breath", "cough", "speech"])[frame.index % 3]
    config = ProbeConfig(target="label", positive="cough", folds=3, repeats=1, bootstrap=0)
    report = evaluate(selection_of(frame, vectors), replace(config, acoustic=False))
    assert report.target.task == "binary"
    assert report.target.classes == ("not cough", "cough")
    assert report.target.y.sum() == (frame["label"] == "cough").sum()
    with pytest.raises(ProbeError, match="makes a binary task"):
        evaluate(selection_of(frame, vectors), replace(config, task="multiclass"))


def test_an_empty_group_column_groups_by_recording() -> None:
    frame, vectors = synthetic(subjects=12, per_subject=4)
    config = ProbeConfig(target="label", group="", folds=3, repeats=1, bootstrap=0)
    assert config.group == "recording_id"  # what the report and its command line name
    report = evaluate(selection_of(frame, vectors), replace(config, acoustic=False))
    assert sorted(set(report.groups)) == sorted(set(frame["recording_id"]))
    assert "--group recording_id" in report.markdown()


# ---- through the store and the CLI ---------------------------------------------------------


def test_selection_reads_labels_point_in_time(workflow: Workflow) -> None:
    store = open_store(workflow.repo)
    now = from_store(store)
    then = from_store(store, T1 + dt.timedelta(days=1))
    changed = str(Path(workflow.changed).resolve())
    labels_now = set(now.frame.loc[now.frame["audio_uri"] == changed, "label"])
    labels_then = set(then.frame.loc[then.frame["audio_uri"] == changed, "label"])
    assert labels_now == {"cough-wet"} and labels_then == {"cough"}
    late = str(workflow.late.resolve())
    assert late in set(now.frame["audio_uri"]) and late not in set(then.frame["audio_uri"])
    assert then.counts["clips_not_yet_registered_or_embedded"] == len(now) - len(then)
    assert {"sample_rate", "dataset", "device", "content_hash"} <= set(now.frame.columns)
    assert len(now.vectors) == len(now) and now.vectors.shape[1] == 512
    assert now.model_id == "hear-features/standin@v1-seed0"
    # --where is typed on the views' own columns (sample_rate is an integer feature).
    high = filtered(now, ["sample_rate >= 44100", "label != cough-wet"])
    assert set(high.frame["sample_rate"]) <= {44_100, 48_000} and len(high) < len(now)
    with pytest.raises(ProbeError, match="no clip meets"):
        filtered(now, ["offset_s > 1000"])
    with pytest.raises(ProbeError, match=r"none of the \d+ stored clips"):
        from_store(store, T1 - dt.timedelta(days=1))


STUDY_VIEW = """

# ---- added by tests/test_probe.py: a study's own label view on the clip entity ----
from feast.types import Bool, Int64

study_labels = FeatureView(
    name="study_labels",
    entities=[clip],
    ttl=timedelta(0),
    schema=[
        Field(name="diagnosis", dtype=String),
        Field(name="age", dtype=Int64),
        Field(name="smoker", dtype=Bool),
        Field(name="site", dtype=String),
    ],
    source=_parquet_source("study_labels_source", "study.parquet"),
    online=False,
)
"""


def test_a_study_label_view_is_joined_point_in_time_without_changes(
    workflow: Workflow, tmp_path: Path
) -> None:
    """Columns the project does not know (a study's label view, typed) are selected,
    filtered and read as of the time asked, like the built-in ones."""
    repo = tmp_path / "repo"
    shutil.copytree(workflow.repo, repo)
    with (repo / "definitions.py").open("a") as f:
        f.write(STUDY_VIEW)
    clips = pd.read_parquet(repo / "data" / "registrations.parquet")
    clips = clips.drop_duplicates("clip_id")[["clip_id", "subject_id"]].reset_index(drop=True)
    first = clips.assign(
        event_timestamp=T1,
        diagnosis="healthy",
        age=np.where(clips["subject_id"] == "subject-0", 70, 30),
        smoker=clips["subject_id"] == "subject-1",
        site="north",
    )
    # Subject 1 is diagnosed at T2: before T2 the label was 'healthy'.
    later = first[first["subject_id"] == "subject-1"].assign(event_timestamp=T2, diagnosis="sick")
    study = pd.concat([first, later]).drop(columns=["subject_id"])
    study["created"] = study["event_timestamp"]
    for column in ("event_timestamp", "created"):
        study[column] = pd.to_datetime(study[column], utc=True).astype("datetime64[us, UTC]")
    study.to_parquet(repo / "data" / "study.parquet", index=False)
    feast(repo, "apply")

    store = open_store(repo)
    now = from_store(store)
    assert "study_labels" in now.source["views"]
    assert now.frame["age"].dtype.kind == "i" and now.frame["smoker"].dtype == bool
    sick = set(now.frame.loc[now.frame["diagnosis"] == "sick", "subject_id"])
    assert sick == {"subject-1"}
    before = from_store(store, T2 - dt.timedelta(days=1))
    assert set(before.frame["diagnosis"]) == {"healthy"}  # the later diagnosis does not leak
    old = filtered(now, ["age >= 40"])
    assert set(old.frame["subject_id"]) == {"subject-0"}
    assert set(filtered(now, ["smoker = true"]).frame["subject_id"]) == {"subject-1"}
    with pytest.raises(ProbeError, match="is not a number"):
        filtered(now, ["age >= forty"])


def test_cli_probe_writes_a_report_from_the_store(workflow: Workflow, tmp_path: Path) -> None:
    out = tmp_path / "probe"
    args = ["probe", "--repo", str(workflow.repo), "--target", "label"]
    args += ["--where", "label != cough-wet", "--group", "recording_id", "--folds", "2"]
    args += ["--repeats", "1", "--bootstrap", "100", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "linear probe: label (3 classes)" in result.output and "AUROC" in result.output
    data = json.loads((out / "report.json").read_text())
    assert data["selection"]["as_of"]
    # Run without --at, the report's command still pins the labels' point in time.
    assert f"--at {data['selection']['as_of']}" in (out / "report.md").read_text()
    assert data["settings"]["where"] == ["label != cough-wet"]
    assert data["classes"] == ["breath", "cough", "speech"]
    assert set(data["metrics"]) == {"embedding", "acoustic", "chance"}
    assert data["acoustic_baseline_skipped"] is None
    assert data["model_id"] == "hear-features/standin@v1-seed0"


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_cli_an_out_that_cannot_be_written_is_refused_before_the_work(
    workflow: Workflow, tmp_path: Path, where: str
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    out = taken if where == "file" else taken / "report"
    args = ["probe", "--repo", str(workflow.repo), "--target", "label", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "select" not in result.output  # no work
    assert ("is an existing file" if where == "file" else "cannot be created") in result.output
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "diagnosis"], "unknown target column 'diagnosis'"),
        (["--target", "label", "--where", "label = speech"], "has one class ('speech')"),
        (["--target", "label", "--folds", "5"], "groups (subject_id) for 5 folds"),
        (["--target", "label", "--where", "label = speech", "--positive", "x"], "one class"),
        (
            ["--target", "label", "--where", "offset_s > 1", "--group", "recording_id"],
            "units selected",
        ),
        (["--target", "label", "--where", "sample_rate >= fast"], "is not a number"),
        (["--target", "label", "--at", "yesterday"], "--at 'yesterday' is not an ISO 8601"),
        (["--target", "label", "--task", "ordinal"], "--task must be one of"),
    ],
)
def test_cli_bad_input_is_one_clear_line_and_a_non_zero_exit(
    workflow: Workflow, tmp_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(
        app, ["probe", "--repo", str(workflow.repo), *args, "--out", str(tmp_path / "x")]
    )
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()
