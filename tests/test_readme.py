"""The README's examples, run as written, so they cannot rot.

Each example is taken from README.md by its section and language and run against a copy
of the session's materialised repository (:func:`tests.conftest.workflow`), with only the
README's placeholder clip id replaced by a real one: the shell workflow with ``bash``
(the stock ``feast`` CLI and ``hear-features``), the DuckDB queries with DuckDB, the SDK
snippet with Python. The shell run is also the check that normal runs are quiet: no
traceback-looking lines and no INFO lines on stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.conftest import Workflow, feast

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
#: The clip id the README uses in its examples.
PLACEHOLDER = "3f2a9c0e1b7d4a55-00001800"


def blocks(section: str, language: str) -> list[str]:
    """The fenced ``language`` blocks under the heading ``section`` (up to the next
    heading of any level; ``#`` lines inside code blocks are code, not headings)."""
    found: list[str] = []
    inside, fence, lines = False, None, []
    for line in README.read_text(encoding="utf-8").splitlines(keepends=True):
        if fence is None and line.startswith("#") and re.match(r"#+ ", line):
            if inside:
                break
            inside = line.strip().lstrip("#").strip() == section
        elif line.startswith("```"):
            if fence is None:
                fence, lines = line[3:].strip(), []
            else:
                if inside and fence == language:
                    found.append("".join(lines))
                fence = None
        elif fence is not None:
            lines.append(line)
    assert found, f"README section {section!r} has no {language} block"
    return found


def _copy_repo(workflow: Workflow, root: Path) -> tuple[Path, str]:
    """A copy of the workflow's repository at ``root/feature_repo``, applied again so that
    its registry names its own tables (a copied registry names the original's), and one
    of its clips."""
    repo = root / "feature_repo"
    shutil.copytree(workflow.repo, repo, ignore=shutil.ignore_patterns("*.lock"))
    feast(repo, "apply")
    clips = pd.read_parquet(repo / "data" / "embeddings.parquet")["clip_id"]
    return repo, str(sorted(clips)[-1])


def test_the_shell_workflow_runs_quietly(workflow: Workflow, tmp_path: Path) -> None:
    (script,) = blocks("The workflow with the stock Feast CLI", "bash")
    repo, clip = _copy_repo(workflow, tmp_path)
    (tmp_path / ".venv").symlink_to(sys.prefix)  # `source .venv/bin/activate`
    shutil.copytree(workflow.corpus, tmp_path / "recordings")
    registered = pd.read_parquet(repo / "data" / "registrations.parquet")
    registered[["clip_id"]].assign(event_timestamp="2100-01-01T00:00:00Z").to_csv(
        repo / "entities.csv", index=False
    )
    env = {k: v for k, v in os.environ.items() if k != "HEAR_MODEL"}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(PLACEHOLDER, clip)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    train = pd.read_parquet(repo / "train.parquet")
    assert len(train) == len(registered) and train["embedding"].notna().all()
    expansion = pd.read_parquet(repo / "expansion.parquet")
    assert len(expansion) > 0 and set(expansion["seed_id"]) == {clip}
    noise = [
        line
        for line in proc.stderr.splitlines()
        if re.search(r"Traceback|Error\(|Error:|\bINFO\b|^I\d{4} ", line)
    ]
    assert not noise, proc.stderr


def test_the_duckdb_queries_count_each_clip_once(workflow: Workflow) -> None:
    (sql,) = blocks("DuckDB over the offline tables", "sql")
    table = workflow.repo / "data" / "embeddings.parquet"
    sql = sql.replace("feature_repo/data/embeddings.parquet", str(table))
    counts_sql, subject_sql = [q for q in sql.split(";") if q.strip()]
    counts = duckdb.sql(counts_sql).df().set_index("label")["clips"]
    # The truth: the newest version of each clip (one clip was relabelled cough -> cough-wet).
    frame = pd.read_parquet(table).sort_values(["event_timestamp", "created"])
    newest = frame.groupby("clip_id").tail(1)
    assert counts.sum() == frame["clip_id"].nunique() < len(frame)
    assert counts.to_dict() == newest["label"].value_counts().to_dict()
    rows = duckdb.sql(subject_sql).fetchall()
    assert rows and len(rows) == (frame["subject_id"] == "subject-1").sum()


def test_the_python_sdk_example_runs(
    workflow: Workflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (code,) = blocks("From Python (the stock Feast SDK)", "python")
    _repo, clip = _copy_repo(workflow, tmp_path)
    monkeypatch.chdir(tmp_path)
    samples = (0.1 * np.sin(np.arange(44_100) * 0.05)).astype(np.float32)
    df = pd.DataFrame(
        {
            "clip_id": ["written"],
            "audio": [samples[:32_000].tolist()],
            "sample_rate": [16_000],
            "event_timestamp": [pd.Timestamp.now(tz="UTC")],
        }
    )
    scope: dict[str, object] = {"samples": samples, "df": df}
    exec(compile(code.replace(PLACEHOLDER, clip), "README.md", "exec"), scope)
    online, hits = scope["online"], scope["hits"]
    assert len(online["embedding"][0]) == 512  # type: ignore[index]
    assert hits["clip_id"] and set(hits["label"]) == {"cough"}  # type: ignore[index]
