"""The audio location policy: local files only, and inside the audio roots when set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hear_features.audio.sources import AUDIO_ROOTS_ENV, AudioSources, SourceRefused
from hear_features.errors import ConfigError


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.wav").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.wav").write_bytes(b"x")
    return root, outside


@pytest.mark.parametrize(
    "uri",
    ["http://example.org/a.wav", "s3://bucket/a.wav", "data:audio/wav;base64,AA", "ftp://h/a"],
)
def test_only_local_files_are_read(uri: str) -> None:
    with pytest.raises(SourceRefused, match=r"scheme .* is not allowed"):
        AudioSources().local_path(uri)


def test_file_uris_and_plain_paths_are_local(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    target = root / "sub" / "a.wav"
    policy = AudioSources.from_roots([root])
    assert policy.local_path(f"file://{target}") == target
    assert policy.local_path(str(target)) == target
    with pytest.raises(SourceRefused, match="remote host"):
        policy.local_path("file://server/share/a.wav")


def test_paths_outside_the_roots_are_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    policy = AudioSources.from_roots([root])
    for bad in (outside / "b.wav", root / ".." / "outside" / "b.wav", Path("/etc/passwd")):
        with pytest.raises(SourceRefused, match="outside the configured audio roots"):
            policy.local_path(str(bad))


def test_a_link_out_of_a_root_is_refused_and_a_loop_is_named(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    (root / "escape.wav").symlink_to(outside / "b.wav")
    policy = AudioSources.from_roots([root])
    with pytest.raises(SourceRefused, match=r"resolved to .*outside"):
        policy.check(root / "escape.wav")
    (root / "loop.wav").symlink_to(root / "loop.wav")
    with pytest.raises(SourceRefused, match="cannot be resolved"):
        policy.check(root / "loop.wav")


def test_no_roots_means_any_local_file(layout: tuple[Path, Path]) -> None:
    _, outside = layout
    assert AudioSources().local_path(str(outside / "b.wav")) == outside / "b.wav"
    assert not AudioSources().confined


def test_roots_come_from_config_relative_to_the_repo_and_the_env_wins(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outside = layout
    policy = AudioSources.from_config("root", base=root.parent)
    assert policy.roots == (root.resolve(),)
    monkeypatch.setenv(AUDIO_ROOTS_ENV, os.pathsep.join([str(outside), str(root)]))
    assert AudioSources.from_config(None).roots == (outside.resolve(), root.resolve())


@pytest.mark.parametrize("bad", ["https://example.org/", "/does/not/exist"])
def test_bad_roots_are_configuration_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="audio root"):
        AudioSources.from_roots([bad])
