"""Linear probes on stored embeddings: grouped splits, baselines, a leakage audit, a report.

``hear-features probe`` and :func:`probe` answer "how much does the embedding know
about this label?" the way health-acoustics papers do (a linear model on frozen
embeddings, subject-disjoint folds, AUROC or MAE with confidence intervals), beside a
chance baseline and an acoustic baseline, after checking the selection for
near-duplicate clips across groups and for labels that the recording setup alone
predicts.

    from hear_features.probe import ProbeConfig, probe
    report = probe("feature_repo", ProbeConfig(target="label"), out="probe-out")
    report.estimate("embedding", "auroc")   # Estimate(mean, std, ci_low, ci_high, ...)
"""

from __future__ import annotations

from hear_features.probe.config import ProbeConfig
from hear_features.probe.report import ProbeReport
from hear_features.probe.run import evaluate, probe
from hear_features.probe.selection import Selection, from_frame, from_store

__all__ = [
    "ProbeConfig",
    "ProbeReport",
    "Selection",
    "evaluate",
    "from_frame",
    "from_store",
    "probe",
]
