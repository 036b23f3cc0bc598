"""Quiet by default: normal runs of `feast` and `hear-features` print no FAISS loader or
TensorFlow start-up lines (they read like failures), and nothing else is swallowed."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from hear_features.featurestore.repo import open_store
from hear_features.quiet import filtered_stderr, quiet_loggers
from tests.conftest import Workflow, WriteAudio, hear_cli, noise

#: What the FAISS loader and the TensorFlow runtime used to print on every run.
NOISE = re.compile(
    r"swigfaiss|ModuleNotFoundError|faiss\.loader|absl::InitializeLog|oneDNN|"
    r"cpu_feature_guard|^I0000 |Traceback|warnings\.warn\(|experimental feature",
    re.MULTILINE,
)


def test_feast_apply_and_materialize_print_no_start_up_chatter(workflow: Workflow) -> None:
    assert "embedded" in workflow.first  # the runs happened and said what they did
    assert NOISE.findall(workflow.stderr) == [], workflow.stderr[-3000:]


def test_hear_features_embed_prints_no_start_up_chatter(
    tmp_path: Path, write_audio: WriteAudio, standin_dir: Path
) -> None:
    audio = write_audio("a.wav", noise(2.5, 16_000), 16_000)
    proc = hear_cli("embed", str(audio), "-o", str(tmp_path / "e.parquet"), "-m", str(standin_dir))
    assert proc.returncode == 0, proc.stderr
    assert NOISE.findall(proc.stdout + proc.stderr) == [], proc.stderr[-3000:]


def test_the_filter_drops_only_the_known_lines_and_keeps_the_rest(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with filtered_stderr(("oneDNN custom operations are on",)):
        os.write(2, b"I0000 00:00:1 port.cc:153] oneDNN custom operations are on. ...\n")
        os.write(2, b"E0000 something real went wrong\n")
        os.write(2, b"partial line without newline")
    captured = capfd.readouterr()
    assert "oneDNN" not in captured.err
    assert "E0000 something real went wrong\n" in captured.err
    assert captured.err.endswith("partial line without newline")


def test_the_filter_gives_stderr_back_when_the_block_raises(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(RuntimeError), filtered_stderr():
        os.write(2, b"kept\n")
        raise RuntimeError("boom")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "kept\nafter\n"


def test_a_level_chosen_by_the_application_is_respected() -> None:
    logger = logging.getLogger("faiss.loader")
    saved = logger.level
    try:
        logger.setLevel(logging.DEBUG)
        quiet_loggers()
        assert logger.level == logging.DEBUG
        logger.setLevel(logging.NOTSET)
        quiet_loggers()
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(saved)


def test_open_store_takes_a_plain_string_path(workflow: Workflow) -> None:
    store = open_store(str(workflow.repo))
    assert Path(store.repo_path).resolve() == workflow.repo.resolve()
