"""Byte-identical copies of a recording (common in public corpora: 122 of 1,324 files of
one) are registered once, not refused; copies whose metadata disagree still are."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import soundfile as sf

from hear_features.featurestore.registration import Recording, register
from tests.conftest import hear_cli, make_repo, noise


def copies(folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir()
    a = folder / "a.wav"
    sf.write(a, noise(3.0, 16_000), 16_000)
    b = folder / "b_copy.wav"
    shutil.copyfile(a, b)
    c = folder / "c.wav"
    sf.write(c, noise(1.0, 16_000, seed=4), 16_000)
    return a, b, c


def test_a_copy_with_the_same_metadata_is_registered_once(tmp_path: Path) -> None:
    a, b, c = copies(tmp_path / "audio")
    table = tmp_path / "registrations.parquet"
    meta = {"label": "cough", "subject_id": "s1", "dataset": "d", "device": None}
    recordings = [Recording(p, dict(meta)) for p in (a, b, c)]
    report = register(recordings, table)
    assert report.problems == []
    assert [(d.source, d.problem) for d in report.duplicates] == [
        (str(b), f"has the same audio content as {a.resolve()}")
    ]
    assert report.recordings == 2 and report.added == 2 + 1  # a: 2 windows, c: 1
    uris = set(pq.read_table(table)["audio_uri"].to_pylist())
    assert uris == {str(a.resolve()), str(c.resolve())}

    digest = hashlib.sha256(table.read_bytes()).hexdigest()
    again = register(recordings, table)  # idempotent: the copy never moves the clip
    assert again.added == 0 and again.unchanged == 3 and len(again.duplicates) == 1
    assert hashlib.sha256(table.read_bytes()).hexdigest() == digest


def test_a_copy_with_other_metadata_is_still_refused(tmp_path: Path) -> None:
    a, b, _ = copies(tmp_path / "audio")
    table = tmp_path / "registrations.parquet"
    report = register([Recording(a, {"label": "cough"}), Recording(b, {"label": "breath"})], table)
    assert report.duplicates == []
    assert [p.source for p in report.problems] == [str(b)]
    assert "same audio content" in report.problems[0].problem
    assert "different metadata" in report.problems[0].problem


def test_a_copy_registered_later_for_another_subject_is_reported(tmp_path: Path) -> None:
    """Across runs the newest registration wins: the copy moves the clips to its subject,
    and the report says so (a subject leak for grouped splits if it was a mistake)."""
    a, b, _ = copies(tmp_path / "audio")
    table = tmp_path / "registrations.parquet"
    first = register([Recording(a, {"label": "cough", "subject_id": "P01"})], table)
    assert first.reassigned == []
    moved = register([Recording(b, {"label": "cough", "subject_id": "P09"})], table)
    assert moved.problems == [] and moved.added == 2
    assert [(r.source, r.problem) for r in moved.reassigned] == [
        (
            str(b),
            f"has the same audio content as {a.resolve()}, registered for subject P01; it "
            "now belongs to subject P09 (the newest registration wins)",
        )
    ]
    # The same file again for its own subject, or for a subject of its own: nothing to say.
    assert register([Recording(b, {"label": "cough", "subject_id": "P09"})], table).reassigned == []
    assert (
        register([Recording(b, {"label": "breath", "subject_id": "P09"})], table).reassigned == []
    )


def test_a_file_changed_in_place_and_registered_again_is_reported(tmp_path: Path) -> None:
    """The new audio is registered; the earlier clips of that file are not touched (they
    may be in a training set already), and the report names them and how to remove them."""
    a, first_audio, _ = copies(tmp_path / "audio")  # first_audio: a copy of a as it was
    table = tmp_path / "registrations.parquet"
    meta = {"label": "cough", "subject_id": "P01"}
    old = register([Recording(a, dict(meta))], table)
    assert old.replaced == []
    old_id = pq.read_table(table)["recording_id"][0].as_py()
    sf.write(a, noise(2.0, 16_000, seed=9), 16_000)  # overwritten in place

    report = register([Recording(a, dict(meta))], table)

    assert report.problems == [] and report.added == 1
    assert [(r.source, r.problem) for r in report.replaced] == [
        (
            str(a),
            f"held other audio when registered before (recording {old_id}); those clips "
            "stay in the store (and searchable, once materialised): remove them with "
            f"`hear-features forget --recording {old_id}`",
        )
    ]
    assert set(pq.read_table(table)["recording_id"].to_pylist()) > {old_id}
    again = register([Recording(a, dict(meta))], table)  # until the old one is forgotten
    assert again.added == 0 and len(again.replaced) == 1

    # Changed back to the first audio: registered again (though known), so that the
    # file's newest registration is what it holds; then unchanged again.
    shutil.copyfile(first_audio, a)
    assert register([Recording(a, dict(meta))], table).added == 2
    newest = pq.read_table(table).sort_by([("created", "descending")])
    assert newest["recording_id"][0].as_py() == old_id
    assert register([Recording(a, dict(meta))], table).added == 0


def test_the_cli_reports_copies_and_exits_zero(tmp_path: Path, standin_dir: Path) -> None:
    a, b, _ = copies(tmp_path / "audio")
    repo = make_repo(tmp_path / "repo", standin_dir)
    proc = hear_cli("register", str(tmp_path / "audio"), "--repo", str(repo))
    assert proc.returncode == 0, proc.stderr
    assert "from 2 recording(s)" in proc.stdout
    assert f"= {b}: has the same audio content as {a.resolve()}; registered once" in proc.stdout
