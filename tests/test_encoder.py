"""The HeAR loader, exercised with the stand-in SavedModel and with broken models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hear_features.audio import WindowConfig
from hear_features.embedding import embed_recordings
from hear_features.encoders import (
    HEAR_SIZED_SHAPE,
    TINY_SHAPE,
    HearEncoder,
    VitShape,
    build_standin,
    build_vit,
    ensure_standin,
    validate_clips,
)
from hear_features.encoders.resolve import local_model, resolve_model
from hear_features.encoders.tf_runtime import choose_device, import_tensorflow
from hear_features.errors import DeviceError, InputShapeError, InvalidModelError, ModelNotFoundError
from hear_features.synthetic import write_corpus
from tests.support.exact import cosine_top_k


def clips(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, 32_000))).astype(np.float32)


def test_standin_loads_through_the_real_loader(encoder: HearEncoder, standin_dir: Path) -> None:
    assert (standin_dir / "saved_model.pb").is_file() and (standin_dir / "variables").is_dir()
    assert encoder.model_id == "hear-features/standin@v1-seed0"
    assert encoder.is_standin and "stand-in encoder, not HeAR" in encoder.describe()
    out = encoder.encode(clips(3))
    assert out.shape == (3, 512) and out.dtype == np.float32 and np.isfinite(out).all()


def test_embeddings_are_deterministic_across_builds(tmp_path: Path, encoder: HearEncoder) -> None:
    again = HearEncoder(local_model(build_standin(tmp_path / "again", seed=0)), device="cpu")
    np.testing.assert_allclose(again.encode(clips(5)), encoder.encode(clips(5)), atol=1e-5)
    other = HearEncoder(local_model(build_standin(tmp_path / "other", seed=1)), device="cpu")
    assert other.model_id != encoder.model_id
    assert not np.allclose(other.encode(clips(2)), encoder.encode(clips(2)), atol=1e-3)


def test_a_clip_does_not_depend_on_its_batch_mates(encoder: HearEncoder) -> None:
    batch = clips(37, seed=4)
    together = encoder.encode(batch)  # batch size 16: batches of 16, 16, 5
    alone = np.concatenate([encoder.encode(batch[i : i + 1]) for i in range(0, 37, 6)])
    np.testing.assert_allclose(together[::6], alone, atol=1e-5)
    shuffled = encoder.encode(batch[::-1])[::-1]
    np.testing.assert_allclose(shuffled, together, atol=1e-5)


def test_encoder_batches_by_configured_size(standin_dir: Path) -> None:
    enc = HearEncoder(local_model(standin_dir), batch_size=4, device="cpu")
    enc.encode(clips(10))
    assert enc.calls == 3


def test_similar_sounds_land_near_each_other(tmp_path: Path, encoder: HearEncoder) -> None:
    items = write_corpus(tmp_path / "corpus", subjects=3, per_label=3)
    labels_by_path = {str(i.path): i.label for i in items}
    vectors, labels = [], []
    for rec in embed_recordings(
        [i.path for i in items], encoder, window_config=WindowConfig(mode="event")
    ):
        assert rec.error is None
        vectors.append(rec.matrix())
        labels += [labels_by_path[rec.source]] * len(rec.clips)
    idx, _ = cosine_top_k(np.concatenate(vectors), np.concatenate(vectors), 1, exclude_self=True)
    agreement = np.mean(np.array(labels)[idx[:, 0]] == np.array(labels))
    assert agreement >= 0.9


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 16_000), np.float32), r"shape \[batch, 32000\].*got \[2, 16000\]"),
        (np.zeros((2, 3, 32_000), np.float32), r"got \[2, 3, 32000\]"),
        (np.zeros((0, 32_000), np.float32), "batch of size 0"),
        (np.zeros((1, 32_000), np.int16), "floating-point"),
        (np.full((2, 32_000), np.nan, np.float32), r"NaN or infinite samples \(rows \[0, 1\]\)"),
    ],
)
def test_bad_encoder_input_is_refused(encoder: HearEncoder, bad: np.ndarray, message: str) -> None:
    with pytest.raises(InputShapeError, match=message):
        encoder.encode(bad)


def test_a_single_clip_vector_is_accepted() -> None:
    assert validate_clips(np.zeros(32_000)).shape == (1, 32_000)


def test_directory_without_savedmodel_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.h5").write_bytes(b"not a saved model")
    with pytest.raises(InvalidModelError, match="not a TensorFlow SavedModel"):
        HearEncoder(local_model(tmp_path), device="cpu")


def test_corrupt_savedmodel_is_refused(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(InvalidModelError, match="could not be loaded as a SavedModel"):
        HearEncoder(local_model(tmp_path), device="cpu")


def _save_module(
    path: Path, in_shape: list[int | None], out_dim: int | None, name: str = "x"
) -> Path:
    """A SavedModel with a chosen signature; out_dim None means 'input length // 10,000'."""
    tf = import_tensorflow()

    class Wrong(tf.Module):  # type: ignore[misc, name-defined]
        @tf.function(input_signature=[tf.TensorSpec(in_shape, tf.float32, name=name)])
        def serve(self, x):  # type: ignore[no-untyped-def]
            width = tf.shape(x)[1] // 10_000 if out_dim is None else out_dim
            return {"output_0": tf.zeros([tf.shape(x)[0], width])}

    module = Wrong()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@pytest.mark.parametrize(
    ("in_shape", "out_dim", "name", "message"),
    [
        ([None, 16_000], 512, "x", r"float32 \[None, 16000\]; HeAR takes float32 \[None, 32000\]"),
        ([None, 32_000], 128, "x", r"output 'output_0' has shape \[None, 128\]"),
        ([None, 32_000], 512, "audio", "must take one input named 'x'"),
    ],
)
def test_savedmodel_with_the_wrong_signature_is_refused(
    tmp_path: Path, in_shape: list[int | None], out_dim: int, name: str, message: str
) -> None:
    path = _save_module(tmp_path / "wrong", in_shape, out_dim, name)
    with pytest.raises(InvalidModelError, match=message):
        HearEncoder(local_model(path), device="cpu")


def test_lax_signature_is_caught_by_the_probe_call(tmp_path: Path) -> None:
    # Declares [None, None] -> [None, None] but returns 3 values per 32,000-sample clip.
    path = _save_module(tmp_path / "lax", [None, None], None)
    with pytest.raises(InvalidModelError, match=r"returned shape \(2, 3\)"):
        HearEncoder(local_model(path), device="cpu")


def test_standin_is_built_once_and_cached(tmp_path: Path) -> None:
    first = resolve_model("standin", cache_dir=tmp_path)
    stamp = (first.path / "saved_model.pb").stat().st_mtime_ns
    second = resolve_model("standin", cache_dir=tmp_path)
    assert second.path == first.path and second.is_standin
    assert (second.path / "saved_model.pb").stat().st_mtime_ns == stamp


def test_half_built_standin_cache_is_rebuilt(tmp_path: Path) -> None:
    broken = tmp_path / "standin-v1-seed0"
    broken.mkdir()
    (broken / "junk").write_text("left by a crash")
    path = ensure_standin(tmp_path)
    assert (path / "saved_model.pb").is_file() and not (path / "junk").exists()


def test_missing_local_directory_names_the_three_options(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(str(tmp_path / "no" / "such" / "model"))
    text = str(info.value)
    assert "does not exist" in text
    assert "local SavedModel directory" in text and "google/hear" in text and "'standin'" in text


def test_local_real_model_is_named_by_content_hash(tmp_path: Path, standin_dir: Path) -> None:
    path = _save_module(tmp_path / "plain", [None, 32_000], 512)
    model = local_model(path)
    assert model.model_id.startswith("savedmodel:sha256:") and not model.is_standin
    assert local_model(path).model_id == model.model_id


@pytest.mark.parametrize(
    ("requested", "gpus", "expected"),
    [("auto", 0, "/CPU:0"), ("auto", 2, "/GPU:0"), ("cpu", 1, "/CPU:0"), ("gpu", 1, "/GPU:0")],
)
def test_device_selection(requested: str, gpus: int, expected: str) -> None:
    assert choose_device(requested, gpus) == expected


def test_gpu_request_without_gpu_is_an_error_not_a_fallback() -> None:
    with pytest.raises(DeviceError, match="GPU was requested but TensorFlow sees none"):
        choose_device("gpu", 0)
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        choose_device("tpu", 0)


def test_encoder_runs_where_tensorflow_says(standin_dir: Path) -> None:
    tf = import_tensorflow()
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    auto = HearEncoder(local_model(standin_dir), device="auto")
    assert auto.info.device == ("/GPU:0" if has_gpu else "/CPU:0")
    if not has_gpu:
        with pytest.raises(DeviceError):
            HearEncoder(local_model(standin_dir), device="gpu")


# ---- the HeAR-sized ViT (built tiny here: same graph, small widths) -----------------


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> HearEncoder:
    path = build_vit(tmp_path_factory.mktemp("vit") / "tiny", TINY_SHAPE, seed=0)
    return HearEncoder(local_model(path), batch_size=8, device="cpu")


def test_hear_sized_shape_matches_the_public_port() -> None:
    shape = HEAR_SIZED_SHAPE
    assert (shape.layers, shape.hidden, shape.heads, shape.patch) == (24, 1024, 16, 16)
    assert (shape.frames, shape.mel_bins, shape.tokens) == (192, 128, 97)
    assert 300e6 < shape.parameters < 310e6  # "about 300M parameters"
    assert 55 < shape.gflop_per_clip < 65  # "about 60 GFLOP per 2 s clip"


def test_tiny_vit_runs_through_the_real_loader(tiny_vit: HearEncoder) -> None:
    assert tiny_vit.model_id == "hear-features/vit-random@v1-L2-H64-A4-M128-P16-seed0"
    assert tiny_vit.is_standin and "not HeAR" in tiny_vit.describe()
    tf = import_tensorflow()
    saved = tf.train.list_variables(str(tiny_vit.path / "variables" / "variables"))
    weights = sum(
        int(np.prod(shape))
        for name, shape in saved
        if name.endswith("VARIABLE_VALUE") and "mel_matrix" not in name
    )
    assert weights == TINY_SHAPE.parameters
    batch = clips(11, seed=5)
    out = tiny_vit.encode(batch)  # batches of 8 and 3
    assert out.shape == (11, 512) and out.dtype == np.float32 and np.isfinite(out).all()
    alone = np.concatenate([tiny_vit.encode(batch[i : i + 1]) for i in (0, 9)])
    np.testing.assert_allclose(out[[0, 9]], alone, atol=1e-5)
    assert not np.allclose(out[0], out[1], atol=1e-4)  # different clips, different vectors


def test_vit_build_never_overwrites(tiny_vit: HearEncoder) -> None:
    with pytest.raises(FileExistsError):
        build_vit(tiny_vit.path, TINY_SHAPE)
    assert tiny_vit.encode(clips(1)).shape == (1, 512)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": 100, "heads": 16}, "multiple of heads"),
        ({"patch": 14}, "tile into patches"),
        ({"mel_bins": 64}, "128 mel bins"),
    ],
)
def test_impossible_vit_shapes_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VitShape(**kwargs)
