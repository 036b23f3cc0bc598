"""The probe's result: one object, written as ``report.json``, ``report.md`` and PNG plots.

``report.json`` holds everything needed to check or redo the run: the settings (seeds
included), the selection, the model id, package versions, the leakage audit, every
metric (mean and standard deviation over repeats, 95 % group-bootstrap interval, value
per repeat) and every out-of-fold prediction with its fold, per repeat. Scores in the
predictions are rounded to 6 decimals to keep the file small. Nothing in the files
depends on the clock or the machine's speed, so the same inputs give the same files.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from hear_features.atomic import atomic_path
from hear_features.errors import ProbeError
from hear_features.probe.audit import Confound, DuplicateAudit
from hear_features.probe.config import CONFOUND_AUROC, CONFOUND_R2, ProbeConfig
from hear_features.probe.metrics import METRICS, Estimate
from hear_features.probe.models import OutOfFold
from hear_features.probe.target import Target

FORMAT = "hear-features probe report 1"
#: Near-duplicate pairs written out in full in report.md (report.json has up to 10,000).
_MD_PAIRS = 20
_DISTRIBUTIONS = (
    "hear-features",
    "scikit-learn",
    "numpy",
    "pandas",
    "feast",
    "faiss-cpu",
    "faiss-gpu",
    "tensorflow-cpu",
    "tensorflow",
    "matplotlib",
)
METRIC_NAMES = {
    "auroc": "AUROC",
    "balanced_accuracy": "balanced accuracy",
    "sensitivity_at_95_specificity": "sensitivity at 95% specificity",
    "mae": "MAE",
    "mape": "MAPE",
}
MODEL_NAMES = {
    "embedding": "embedding",
    "acoustic": "log-mel statistics",
    "chance": "chance",
}


@dataclass
class ProbeReport:
    """Everything a probe run found. ``metrics[model][metric]`` is an :class:`Estimate`."""

    config: ProbeConfig
    target: Target
    model_id: str
    level: str
    selection: dict[str, Any]
    units: np.ndarray
    groups: np.ndarray
    folds: np.ndarray
    results: list[OutOfFold]
    metrics: dict[str, dict[str, Estimate]]
    duplicates: DuplicateAudit
    confounds: list[Confound]
    acoustic_skipped: str | None
    warnings: list[str]
    versions: dict[str, str] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    #: Seconds per stage of this run; printed, never written (files stay reproducible).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def main_metric(self) -> str:
        return METRICS[self.target.task][0]

    def estimate(self, model: str = "embedding", metric: str | None = None) -> Estimate:
        return self.metrics[model][metric or self.main_metric]

    # ---- files ----------------------------------------------------------------------

    def write(self, out: Path) -> None:
        """Write report.json, report.md and the plots into ``out`` (created if needed)."""
        from hear_features.probe.plots import write_plots

        out.mkdir(parents=True, exist_ok=True)
        self.plots = write_plots(out, self.target, self.results, self.folds)
        for name, text in (
            ("report.json", json.dumps(self.as_dict(), indent=1, allow_nan=False)),
            ("report.md", self.markdown()),
        ):
            with atomic_path(out / name) as tmp:
                tmp.write_text(text + "\n")

    def as_dict(self) -> dict[str, Any]:
        target = self.target
        return {
            "format": FORMAT,
            "task": target.task,
            "target": target.column,
            "classes": list(target.classes),
            "positive_class": target.positive,
            "level": self.level,
            "group": self.config.group,
            "model_id": self.model_id,
            "selection": self.selection,
            "settings": self.config.as_dict(),
            "seeds": {
                "outer_folds": self.config.split_seeds(),
                "inner_folds_and_solver": self.config.split_seeds(),
                "bootstrap": self.config.seed,
            },
            "versions": self.versions,
            "warnings": self.warnings,
            "audit": {
                "near_duplicates": self.duplicates.as_dict(),
                "confounds": [asdict(c) for c in self.confounds],
            },
            "metrics": {
                model: {m: e.as_dict() for m, e in table.items()}
                for model, table in self.metrics.items()
            },
            "models": {
                r.name: {
                    "features": r.features,
                    "chosen_regularisation": r.chosen,
                    "fits_not_converged": r.not_converged,
                }
                for r in self.results
            },
            "acoustic_baseline_skipped": self.acoustic_skipped,
            "plots": self.plots,
            "predictions": self._predictions(),
        }

    def _predictions(self) -> dict[str, Any]:
        target = self.target
        if target.is_classification:
            truth: list[Any] = [target.classes[i] for i in target.y.tolist()]
        else:
            truth = target.y.tolist()
        repeats = []
        for r, seed in enumerate(self.config.split_seeds()):
            repeats.append(
                {
                    "seed": seed,
                    "fold": self.folds[r].tolist(),
                    "scores": {
                        res.name: np.round(res.scores[r], 6).tolist() for res in self.results
                    },
                }
            )
        return {
            "score": (
                f"probability of {target.positive!r}"
                if target.task == "binary"
                else "class probabilities in the order of 'classes'"
                if target.task == "multiclass"
                else "predicted value"
            ),
            "unit_id": self.units.tolist(),
            "group": self.groups.tolist(),
            "target": truth,
            "repeats": repeats,
        }

    # ---- text ---------------------------------------------------------------------

    def headline(self) -> str:
        target = self.target
        if target.task == "binary":
            what = f"binary, positive class {target.positive!r}"
        elif target.task == "multiclass":
            what = f"{len(target.classes)} classes"
        else:
            what = "regression"
        return f"{target.column} ({what}), {self.level} level"

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the results table (shared by report.md and the CLI)."""
        names = METRICS[self.target.task]
        header = ["model", "features", *(METRIC_NAMES[m] for m in names)]
        rows = []
        for result in self.results:
            cells = [metric_cell(self.metrics[result.name][m]) for m in names]
            rows.append([MODEL_NAMES.get(result.name, result.name), str(result.features), *cells])
        return header, rows

    def markdown(self) -> str:
        cfg, sel = self.config, self.selection
        lines = [f"# Linear probe: {self.headline()}", ""]
        units = f"{len(self.units)} {self.level}s"
        if self.level != "clip":
            units += f" (from {sel.get('clips_selected', '?')} clips)"
        lines += [
            f"- model: `{self.model_id}`",
            f"- units: {units} in {len(np.unique(self.groups))} groups ({cfg.group})",
        ]
        if sel.get("as_of"):
            lines.append(f"- labels as of {sel['as_of']} (point in time)")
        if cfg.where:
            lines.append(f"- where: {' AND '.join(f'`{w}`' for w in cfg.where)}")
        counts = self.target.class_counts()
        if counts:
            lines.append("- classes: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        lines.append(
            f"- evaluation: {cfg.folds}-fold grouped cross-validation x {cfg.repeats} repeat(s) "
            f"(seeds {cfg.split_seeds()}); 95% CI: bootstrap over groups "
            f"({cfg.bootstrap} resamples)"
        )
        lines.append("")
        if self.warnings:
            lines += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        header, rows = self.table_rows()
        lines += ["## Results", "", _md_table(header, rows), ""]
        lines.append(
            "Rows: the linear probe on the stored embeddings; the same probe on statistics "
            "of the project's log-mel front-end (acoustic baseline); chance (a constant "
            "score, the majority class; regression: the training mean). "
            "Cells: mean over repeats ± standard deviation [95% CI]; classification "
            "metrics per test fold, averaged over the folds."
        )
        if self.acoustic_skipped:
            lines.append(f"The acoustic baseline was skipped: {self.acoustic_skipped}.")
        lines += ["", "## Leakage audit", "", "### Near-duplicates", ""]
        dup = self.duplicates
        lines.append(
            f"{len(dup.pairs)} pair(s) of units in different groups closer than cosine distance "
            f"{dup.threshold:g} ({dup.across_folds} ended up in different folds; "
            f"{dup.within_group} more pairs within groups; index {dup.index})."
        )
        if dup.pairs:
            shown = dup.pairs[:_MD_PAIRS]
            lines += [
                "",
                _md_table(
                    ["unit", "group", "unit", "group", "distance"],
                    [
                        [p.unit_a, p.group_a, p.unit_b, p.group_b, f"{p.distance:.5f}"]
                        for p in shown
                    ],
                ),
            ]
            if len(dup.pairs) > len(shown):
                lines.append(f"\n... and {len(dup.pairs) - len(shown)} more in report.json.")
        lines += ["", "### Confounds", ""]
        if self.confounds:
            threshold = CONFOUND_AUROC if self.target.is_classification else CONFOUND_R2
            lines.append(
                f"The target predicted from each column alone (same grouped folds; "
                f"confounded above {threshold:g}):"
            )
            lines += [
                "",
                _md_table(
                    ["column", "encoding", "values", self.confounds[0].metric, "confounded"],
                    [
                        [
                            c.column,
                            c.encoding,
                            str(c.levels),
                            "-" if c.score is None else f"{c.score:.3f}",
                            "**yes**" if c.confounded else (c.note or "no"),
                        ]
                        for c in self.confounds
                    ],
                ),
            ]
        else:
            lines.append("No metadata column to check.")
        if self.plots:
            lines += ["", "## Plots", ""]
            lines += [f"![{kind}]({name})" for kind, name in self.plots.items()]
        reproduce = command_line(cfg, sel.get("repo"), sel.get("as_of"))
        lines += ["", "## Reproduce", "", "```", reproduce, "```", ""]
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()) + ".")
        return "\n".join(lines)


def check_out(out: Path) -> None:
    """Refuse an output folder that cannot be written, before the probe does its work.

    Raises :class:`~hear_features.errors.ProbeError` when ``out`` is an existing file, or
    when the nearest existing folder above it is a file or not writable.
    """
    if out.exists():
        if not out.is_dir():
            raise ProbeError(f"--out {out} is an existing file; give a folder")
        existing = out
    else:
        existing = next(p for p in out.absolute().parents if p.exists())
        if not existing.is_dir():
            raise ProbeError(f"--out {out} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ProbeError(f"--out {out} cannot be written: {existing} is not writable")


def metric_cell(estimate: Estimate) -> str:
    text = f"{estimate.mean:.3f}"
    if len(estimate.per_repeat) > 1:
        text += f" ± {estimate.std:.3f}"
    if estimate.ci_low is not None:
        text += f" [{estimate.ci_low:.3f}, {estimate.ci_high:.3f}]"
    return text


def command_line(config: ProbeConfig, repo: str | None, as_of: str | None = None) -> str:
    """The command that repeats this probe. It always names the point in time the labels
    were read at (``as_of`` when no ``--at`` was given): later registrations would
    otherwise change the labels, and so the numbers."""
    parts = ["hear-features probe"]
    if repo:
        parts.append(f"--repo {repo}")
    parts += [f"--target {config.target}", f"--group {config.group}"]
    parts += [f"--where {json.dumps(w)}" for w in config.where]
    parts += [f"--task {config.task}", f"--level {config.level}"]
    if config.positive:
        parts.append(f"--positive {json.dumps(config.positive)}")
    at = config.at.isoformat() if config.at else as_of
    if at:
        parts.append(f"--at {at}")
    parts += [f"--folds {config.folds}", f"--repeats {config.repeats}", f"--seed {config.seed}"]
    parts += [f"--confound {c}" for c in config.confounds]
    return " ".join(parts) + " --out DIR"


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the numbers (those installed)."""
    found = {"python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(out)
