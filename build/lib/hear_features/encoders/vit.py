"""A HeAR-sized ViT with random weights, saved with HeAR's signature, to measure cost.

The real HeAR weights are gated, so nothing here can time the real model. What decides
its cost is its shape, which is public (the PyTorch port ``google/hear-pytorch``, a
transformers ViT): a 192x128 log-mel image cut into 16x16 patches (96 patches plus a
class token = 97 tokens), 24 pre-norm transformer layers of width 1024 with 16 heads and
an MLP of 4096, and a 512-d pooled output: about 300M parameters and 60 GFLOP per 2 s
clip. This module builds that network in TensorFlow with seeded random weights and
saves it as a SavedModel with HeAR's serving signature (``x``: float32 [None, 32000] ->
``output_0``: float32 [None, 512]), so the project's own loader
(:class:`~hear_features.encoders.HearEncoder`) runs it exactly as it would run HeAR.

Its vectors mean nothing (random weights): it is for timing and memory only, and every
vector carries the model id ``hear-features/vit-random@...``. :data:`HEAR_SIZED_SHAPE` is
the full size (about 1.2 GB on disk); tests build :data:`TINY_SHAPE`, which has the same
graph. ``--model hear-sized`` builds the full size once into the cache and loads it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hear_features.encoders.savedmodel import (
    N_MELS,
    VIT_KIND,
    ensure_built,
    log_mel,
    mel_weight_matrix,
    write_savedmodel,
)
from hear_features.encoders.tf_runtime import import_tensorflow
from hear_features.schema import CLIP_SAMPLES, EMBEDDING_DIM

VIT_VERSION = 1
_INIT_STD = 0.02  # ViT's truncated-normal initialiser scale


@dataclass(frozen=True)
class VitShape:
    """The shape of the transformer; the defaults are HeAR's (the PyTorch port's)."""

    layers: int = 24
    hidden: int = 1024
    heads: int = 16
    mlp: int = 4096
    patch: int = 16
    frames: int = 192  # the log-mel image's time axis after resizing
    mel_bins: int = N_MELS

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.frames % self.patch or self.mel_bins % self.patch:
            raise ValueError(f"the {self.frames}x{self.mel_bins} image must tile into patches")
        if self.mel_bins != N_MELS:
            raise ValueError(f"the front-end makes {N_MELS} mel bins, not {self.mel_bins}")

    @property
    def tokens(self) -> int:
        """Patches plus the class token (97 for HeAR's shape)."""
        return (self.frames // self.patch) * (self.mel_bins // self.patch) + 1

    @property
    def parameters(self) -> int:
        """Trainable weights, biases and norms (about 303M for HeAR's shape)."""
        h, p = self.hidden, self.patch
        per_layer = 4 * h * h + 4 * h + 2 * h * self.mlp + self.mlp + h + 4 * h
        embed = p * p * h + h + h + self.tokens * h
        return self.layers * per_layer + embed + 2 * h + h * EMBEDDING_DIM + EMBEDDING_DIM

    @property
    def gflop_per_clip(self) -> float:
        """Multiply-adds x 2 of one clip through the transformer (about 60 for HeAR's shape)."""
        t, h = self.tokens, self.hidden
        dense = t * (4 * h * h + 2 * h * self.mlp)
        attention = 2 * t * t * h
        patches = (t - 1) * self.patch * self.patch * h
        return 2 * (self.layers * (dense + attention) + patches + h * EMBEDDING_DIM) / 1e9

    @property
    def tag(self) -> str:
        return f"L{self.layers}-H{self.hidden}-A{self.heads}-M{self.mlp}-P{self.patch}"


HEAR_SIZED_SHAPE = VitShape()
TINY_SHAPE = VitShape(layers=2, hidden=64, heads=4, mlp=128)


def vit_model_id(shape: VitShape, seed: int) -> str:
    return f"hear-features/vit-random@v{VIT_VERSION}-{shape.tag}-seed{seed}"


def build_vit(
    out_dir: str | os.PathLike[str], shape: VitShape = HEAR_SIZED_SHAPE, seed: int = 0
) -> Path:
    """Build the ViT SavedModel into ``out_dir`` (which must not exist yet).

    Needs about twice the weights in memory while saving (2.4 GB for HeAR's shape).
    Raises ``FileExistsError`` when ``out_dir`` exists.
    """
    if Path(out_dir).exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new directory")
    module = _make_module(import_tensorflow(), shape, seed)
    marker = {
        "kind": VIT_KIND,
        "version": VIT_VERSION,
        "seed": seed,
        "model_id": vit_model_id(shape, seed),
        "shape": asdict(shape),
    }
    return write_savedmodel(module, out_dir, marker)


def ensure_vit(cache_dir: Path, shape: VitShape = HEAR_SIZED_SHAPE, seed: int = 0) -> Path:
    """The cached ViT of this shape and seed under ``cache_dir``, built on first use."""
    target = cache_dir / f"vit-random-v{VIT_VERSION}-{shape.tag}-seed{seed}"
    return ensure_built(target, lambda path: build_vit(path, shape, seed))


def _make_module(tf: Any, shape: VitShape, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    h = shape.hidden

    def weight(*dims: int, name: str) -> Any:
        values = rng.standard_normal(dims, dtype=np.float32) * np.float32(_INIT_STD)
        return tf.Variable(values, trainable=False, name=name)

    def zeros(n: int, name: str) -> Any:
        return tf.Variable(np.zeros(n, np.float32), trainable=False, name=name)

    def ones(n: int, name: str) -> Any:
        return tf.Variable(np.ones(n, np.float32), trainable=False, name=name)

    class Layer(tf.Module):
        def __init__(self, i: int) -> None:
            super().__init__(name=f"layer_{i}")
            self.norm1 = (ones(h, "norm1_scale"), zeros(h, "norm1_bias"))
            self.qkv = (weight(h, 3 * h, name="qkv_kernel"), zeros(3 * h, "qkv_bias"))
            self.out = (weight(h, h, name="out_kernel"), zeros(h, "out_bias"))
            self.norm2 = (ones(h, "norm2_scale"), zeros(h, "norm2_bias"))
            self.fc1 = (weight(h, shape.mlp, name="fc1_kernel"), zeros(shape.mlp, "fc1_bias"))
            self.fc2 = (weight(shape.mlp, h, name="fc2_kernel"), zeros(h, "fc2_bias"))

    class HearSizedVit(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="hear_sized_vit")
            self.mel_matrix = tf.Variable(mel_weight_matrix(tf), trainable=False, name="mel_matrix")
            self.patch_embed = (
                weight(shape.patch * shape.patch, h, name="patch_kernel"),
                zeros(h, "patch_bias"),
            )
            self.cls = weight(1, 1, h, name="cls_token")
            self.position = weight(1, shape.tokens, h, name="position_embedding")
            self.layers = [Layer(i) for i in range(shape.layers)]
            self.final_norm = (ones(h, "final_scale"), zeros(h, "final_bias"))
            self.pooler = (
                weight(h, EMBEDDING_DIM, name="pooler_kernel"),
                zeros(EMBEDDING_DIM, "pooler_bias"),
            )

        @tf.function(input_signature=[tf.TensorSpec([None, CLIP_SAMPLES], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            x = tf.ensure_shape(x, [None, CLIP_SAMPLES])
            tokens = self._embed(x)
            for layer in self.layers:
                tokens = self._block(layer, tokens)
            cls = _norm(tf, tokens[:, 0], self.final_norm)
            return {"output_0": tf.math.tanh(_dense(tf, cls, self.pooler))}

        def _embed(self, x: Any) -> Any:
            """[B, 32000] -> [B, tokens, hidden]: log-mel image, 16x16 patches, class token."""
            image = log_mel(tf, x, self.mel_matrix)[..., None]  # [B, 198, 128, 1]
            image = tf.image.resize(image, [shape.frames, shape.mel_bins])[..., 0]
            image = (image - tf.reduce_mean(image, axis=[1, 2], keepdims=True)) / (
                tf.math.reduce_std(image, axis=[1, 2], keepdims=True) + 1e-6
            )
            p, rows, cols = shape.patch, shape.frames // shape.patch, shape.mel_bins // shape.patch
            batch = tf.shape(x)[0]
            patches = tf.reshape(image, [batch, rows, p, cols, p])
            patches = tf.reshape(
                tf.transpose(patches, [0, 1, 3, 2, 4]), [batch, rows * cols, p * p]
            )
            tokens = _dense(tf, patches, self.patch_embed)
            cls = tf.tile(self.cls, [batch, 1, 1])
            return tf.concat([cls, tokens], axis=1) + self.position

        def _block(self, layer: Any, tokens: Any) -> Any:
            """One pre-norm transformer layer: self-attention, then the MLP, each residual."""
            batch = tf.shape(tokens)[0]
            heads, width = shape.heads, h // shape.heads
            qkv = _dense(tf, _norm(tf, tokens, layer.norm1), layer.qkv)
            qkv = tf.transpose(tf.reshape(qkv, [batch, -1, 3, heads, width]), [2, 0, 3, 1, 4])
            q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, tokens, width]
            weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / math.sqrt(width))
            attended = tf.reshape(tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3]), [batch, -1, h])
            tokens = tokens + _dense(tf, attended, layer.out)
            hidden = tf.nn.gelu(_dense(tf, _norm(tf, tokens, layer.norm2), layer.fc1))
            return tokens + _dense(tf, hidden, layer.fc2)

    return HearSizedVit()


def _dense(tf: Any, x: Any, params: tuple[Any, Any]) -> Any:
    kernel, bias = params
    return tf.matmul(x, kernel) + bias


def _norm(tf: Any, x: Any, params: tuple[Any, Any]) -> Any:
    scale, bias = params
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + 1e-12) * scale + bias
