"""Turn a ``--model`` value into a local SavedModel directory and a model id.

A model spec is one of:

* ``standin`` - the project's own HeAR-compatible stand-in, built once and cached;
* ``hear-sized`` - a ViT with HeAR's shape and random weights, built once and cached
  (about 1.2 GB): for measuring what the real model costs, never for real vectors;
* a local directory holding a SavedModel (for example a copy of ``google/hear``);
* a Hugging Face repository id such as ``google/hear`` (the default), downloaded with
  ``huggingface_hub.snapshot_download`` using the user's token (``HF_TOKEN`` or a saved
  ``hf auth login``) and the standard hub cache.

Hub failures become :class:`~hear_features.errors.ModelError` subclasses whose message
says what to do, and always names the three ways to give a model.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hear_features.defaults import HEAR_SIZED, MODEL_ENV, STANDIN, model_spec
from hear_features.encoders.savedmodel import VIT_KIND, read_marker
from hear_features.encoders.standin import ensure_standin, standin_model_id
from hear_features.encoders.vit import ensure_vit
from hear_features.errors import ModelAccessError, ModelNotFoundError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

MODEL_OPTIONS_HINT = (
    f"Give a model with --model (or {MODEL_ENV}): a local SavedModel directory, "
    "a Hugging Face repo id (default google/hear), or the word 'standin' for the "
    "project's stand-in encoder (not HeAR)."
)


@dataclass(frozen=True)
class ResolvedModel:
    """A SavedModel on local disk, and the id every embedding it makes will carry."""

    path: Path
    model_id: str
    is_standin: bool


def default_cache_dir() -> Path:
    """Where the stand-in is cached: ``$HEAR_FEATURES_CACHE`` or ``~/.cache/hear-features``."""
    env = os.environ.get("HEAR_FEATURES_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hear-features"


def resolve_model(
    spec: str | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: Path | None = None,
    offline: bool | None = None,
) -> ResolvedModel:
    """Find (and if needed download or build) the model named by ``spec``."""
    spec = model_spec(spec)
    if spec == STANDIN:
        return local_model(ensure_standin(cache_dir or default_cache_dir()))
    if spec == HEAR_SIZED:
        return local_model(ensure_vit(cache_dir or default_cache_dir()))
    local = Path(spec).expanduser()
    if local.is_dir():
        return local_model(local)
    if not _REPO_ID.match(spec):  # paths start with / . ~ or have more than one slash
        raise ModelNotFoundError(f"model directory {spec!r} does not exist. {MODEL_OPTIONS_HINT}")
    return hub_model(spec, revision=revision, token=token, offline=offline)


def local_model(path: Path) -> ResolvedModel:
    """A SavedModel directory on disk; its id is the one our marker names, or a content hash."""
    marker = read_marker(path)
    if marker is not None and marker.get("kind") == VIT_KIND:
        return ResolvedModel(path, str(marker["model_id"]), True)
    if marker is not None:
        return ResolvedModel(path, standin_model_id(int(marker.get("seed", 0))), True)  # type: ignore[call-overload]
    return ResolvedModel(path, f"savedmodel:sha256:{savedmodel_digest(path)[:16]}", False)


def hub_model(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    offline: bool | None = None,
) -> ResolvedModel:
    """Download (or find in the cache) ``repo_id`` and name it ``repo@commit``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        path = Path(
            snapshot_download(repo_id, revision=revision, token=token, local_files_only=offline)
        )
    except GatedRepoError as exc:
        raise ModelAccessError(
            f"{repo_id} is a gated repository and this account has no access yet. Log in at "
            f"https://huggingface.co/{repo_id}, accept the Health AI Developer Foundations "
            "terms, then set HF_TOKEN (or run `hf auth login`). " + MODEL_OPTIONS_HINT
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelNotFoundError(
            f"{repo_id} has no revision {revision!r}. {MODEL_OPTIONS_HINT}"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelAccessError(
            f"{repo_id} was not found on the Hugging Face Hub, or it is private and the token "
            f"(HF_TOKEN or `hf auth login`) has no access to it. {MODEL_OPTIONS_HINT}"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise ModelNotFoundError(
            f"{repo_id} is not in the local Hugging Face cache and the hub cannot be reached "
            f"(offline mode or no network). Download it once with network access, or point "
            f"--model at a local copy. {MODEL_OPTIONS_HINT}"
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelNotFoundError(
            f"the Hugging Face Hub refused {repo_id}: {exc}. {MODEL_OPTIONS_HINT}"
        ) from exc
    except OSError as exc:
        raise ModelNotFoundError(
            f"could not download {repo_id}: {exc}. {MODEL_OPTIONS_HINT}"
        ) from exc
    commit = path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else (revision or "unknown")
    return ResolvedModel(path, f"{repo_id}@{commit}", False)


def savedmodel_digest(path: Path) -> str:
    """SHA-256 over the relative names and bytes of every file of a SavedModel."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()
