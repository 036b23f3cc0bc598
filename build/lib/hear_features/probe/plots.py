"""The report's pictures (PNG, matplotlib's Agg renderer, no display needed).

Classification: ROC curves (every model; one-vs-rest per class for multi-class), each
the mean of the per-test-fold curves of every repeat (true-positive rate averaged at
each false-positive rate), as the AUROC is taken per fold,
the embedding probe's confusion matrix (rows: true class, normalised per row, counts
written in the cells) and its reliability curve (mean predicted probability against
the observed frequency, ten quantile bins; multi-class: the top class's confidence).
Regression: predicted against true values. The other pictures pool the out-of-fold
scores of all repeats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, roc_curve

from hear_features.probe.metrics import predicted_class
from hear_features.probe.models import OutOfFold
from hear_features.probe.target import Target

_DPI = 110


def write_plots(
    out: Path, target: Target, results: list[OutOfFold], folds: np.ndarray
) -> dict[str, str]:
    """Draw the pictures into ``out``; ``folds`` ``[R, n]``: each unit's test fold per
    repeat. Returns {kind: file name}."""
    main = results[0]
    files: dict[str, str] = {}
    if target.is_classification:
        files["roc"] = _save(_roc(target, results, folds), out / "roc.png")
        files["confusion_matrix"] = _save(_confusion(target, main), out / "confusion_matrix.png")
        files["reliability"] = _save(_reliability(target, main), out / "reliability.png")
    else:
        files["predicted_vs_true"] = _save(_scatter(target, main), out / "predicted_vs_true.png")
    return files


def _save(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=_DPI, metadata={"Software": None})
    return path.name


def _pooled(target: Target, result: OutOfFold) -> tuple[np.ndarray, np.ndarray]:
    repeats = result.scores.shape[0]
    y = np.tile(target.y, repeats)
    scores = result.scores.reshape(repeats * len(target.y), *result.scores.shape[2:])
    return y, scores


def _roc(target: Target, results: list[OutOfFold], folds: np.ndarray) -> Figure:
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for result in results:
        if target.task == "binary":
            ax.plot(_FPR, _mean_roc(target.y == 1, result.scores, folds), label=result.name)
        elif result is results[0]:
            for k, name in enumerate(target.classes):
                tpr = _mean_roc(target.y == k, result.scores[..., k], folds)
                ax.plot(_FPR, tpr, label=f"{result.name}: {name} vs rest")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=_title(target, "ROC"))
    ax.legend(loc="lower right", fontsize="small")
    return fig


_FPR = np.linspace(0, 1, 201)


def _mean_roc(positive: np.ndarray, scores: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """True-positive rate at :data:`_FPR`, averaged over the test folds (of every
    repeat) that hold both classes: the curves of different folds' models, each on its
    own scale, are never mixed into one ranking."""
    curves = []
    for score, fold in zip(scores, folds, strict=True):
        for k in np.unique(fold):
            test = fold == k
            if 0 < positive[test].sum() < test.sum():
                fpr, tpr, _ = roc_curve(positive[test], score[test])
                curves.append(np.interp(_FPR, fpr, tpr))
    mean = np.mean(curves, axis=0) if curves else np.full(len(_FPR), np.nan)
    mean[0] = 0.0
    return mean


def _confusion(target: Target, result: OutOfFold) -> Figure:
    y, scores = _pooled(target, result)
    counts = confusion_matrix(
        y, predicted_class(target.task, scores), labels=range(len(target.classes))
    )
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.2 + 0.7 * len(target.classes)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(target.classes)):
        for j in range(len(target.classes)):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n{rates[i, j]:.0%}",
                ha="center",
                va="center",
                color=colour,
                fontsize="small",
            )
    ticks = range(len(target.classes))
    ax.set_xticks(ticks, target.classes, rotation=30, ha="right")
    ax.set_yticks(ticks, target.classes)
    ax.set(xlabel="predicted", ylabel="true", title=_title(target, f"confusion ({result.name})"))
    fig.tight_layout()
    return fig


def _reliability(target: Target, result: OutOfFold) -> Figure:
    y, scores = _pooled(target, result)
    if target.task == "binary":
        truth, confidence = y, scores
    else:
        top = np.argmax(scores, axis=1)
        truth, confidence = (top == y).astype(int), scores.max(axis=1)
    observed, predicted = calibration_curve(truth, confidence, n_bins=10, strategy="quantile")
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    ax.plot(predicted, observed, marker="o", label=result.name)
    what = f"P({target.positive})" if target.task == "binary" else "top-class confidence"
    ax.set(
        xlabel=f"mean predicted {what}",
        ylabel="observed frequency",
        title=_title(target, "reliability"),
    )
    ax.legend(loc="upper left", fontsize="small")
    return fig


def _scatter(target: Target, result: OutOfFold) -> Figure:
    y, scores = _pooled(target, result)
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(y, scores, s=6, alpha=0.4)
    low, high = float(min(y.min(), scores.min())), float(max(y.max(), scores.max()))
    ax.plot([low, high], [low, high], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel=f"true {target.column}",
        ylabel="predicted",
        title=_title(target, f"regression ({result.name})"),
    )
    return fig


def _title(target: Target, what: str) -> str:
    return f"{target.column}: {what}"
