"""Executor ``ray``: the embedding step of ``feast materialize`` as Ray Data batch inference.

Selected in ``feature_store.yaml``::

    batch_engine:
      type: hear_features.featurestore.engine.HearEngine
      executor: ray
      ray_address: auto      # a running cluster; unset: a local Ray for this run
      workers: 4             # encoder actors, each loads the model once
      gpus_per_worker: 1
      cpus_per_worker: 4

Only the per-recording work moves: the ``feast materialize`` process (the driver) still
reads the registrations, decides which clips lack a vector, appends the offline table,
writes online and keeps the index, exactly as with ``executor: local``, and the
recordings are decoded and embedded by the same function
(:func:`~hear_features.featurestore.materialize.embed_clip_rows`), so both executors
store the same vectors.

How the work is laid out:

* the pending clips become Arrow tables of whole recordings, about ``batch_size`` clips
  each, handed to ``ray.data.from_arrow`` as a list: one block per table, so batches
  spread over the actors (one table would be one block, and one busy actor) without a
  repartition, whose shuffle tasks would wait for a CPU that the actors may all hold;
* ``map_batches`` runs :class:`EncoderActor` on a pool of ``workers`` actors
  (``num_gpus``/``num_cpus`` per actor), one block per call, so each recording is
  decoded once, on the worker;
* each actor answers one row per clip it was given: its vector, or the problem of its
  recording. The driver checks that every pending clip came back exactly once and that
  every worker loaded the model the driver expects, then hands the vectors to the
  append.

A worker that dies (killed, out of memory, its node lost) is restarted by Ray and the
batches it held are run again (``max_restarts`` and ``max_task_retries``, both
``max_retries`` from the configuration); a batch's result reaches the driver once, from
whichever attempt finished it. Nothing is appended before every clip is back, so a run
that fails stores nothing and the next run starts over.

The audio and the model must be readable on every node at the paths the registration
table names (a shared filesystem, or the same copy everywhere), and every node needs
this package installed (the same image, or a ``runtime_env``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from hear_features.audio.sources import AudioSources
from hear_features.errors import (
    ConfigError,
    HearFeaturesError,
    MaterializationError,
    ModelMismatchError,
)
from hear_features.featurestore.config import EncoderSettings, HearEngineConfig
from hear_features.featurestore.materialize import CLIP_COLUMNS, Problem, embed_clip_rows
from hear_features.schema import EMBEDDING_DIM, JOIN_KEY, REGISTRATION_SCHEMA

log = logging.getLogger(__name__)

#: The Arrow schema of the clips sent to the actors: the registration's own columns.
CLIP_SCHEMA = pa.schema([REGISTRATION_SCHEMA.field(name) for name in CLIP_COLUMNS])


class EncoderActor:
    """One Ray actor: loads the encoder once, then decodes and embeds blocks of recordings.

    Ray Data builds it in a worker process; :meth:`bound` gives it the run's settings as
    class attributes (the class travels with its settings, so no constructor arguments
    sit in the object store, which Ray warns an actor restart may not find), and the
    encoder is made from them in the worker, not taken from any global of the driver.
    Each actor holds its own model, on the GPU Ray assigned to it if any.
    """

    settings: EncoderSettings
    sources: AudioSources
    cpus: float

    @classmethod
    def bound(
        cls, settings: EncoderSettings, sources: AudioSources, cpus: float
    ) -> type[EncoderActor]:
        """This class with the settings, audio policy and CPUs of one run's actors."""
        attributes = {"settings": settings, "sources": sources, "cpus": cpus}
        return type(cls.__name__, (cls,), attributes)

    def __init__(self) -> None:
        from hear_features.encoders.tf_runtime import import_tensorflow
        from hear_features.quiet import quiet_loggers

        quiet_loggers()
        # TensorFlow sizes its thread pools for the whole machine; an actor gets the CPUs
        # Ray reserved for it, so that several actors on one node do not oversubscribe it.
        threads = max(1, round(self.cpus))
        tf = import_tensorflow()
        with contextlib.suppress(RuntimeError):  # already initialised in this process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.encoder = self.settings.load()
        self.batch_size = self.settings.batch_size
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        log.info("Ray worker %s loaded %s", self.worker, self.encoder.describe())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Clips (numpy columns of :data:`CLIP_COLUMNS`) -> one row per clip: ``clip_id``,
        ``embedding`` float32 [n, 512] (zeros where ``problem`` is set), ``audio_uri``,
        ``problem`` (empty when embedded), ``model_id``, ``worker``."""
        rows = [
            {name: batch[name][i] for name in CLIP_COLUMNS} for i in range(len(batch[JOIN_KEY]))
        ]
        for row in rows:
            row["offset_s"] = float(row["offset_s"])
        computed, problems = embed_clip_rows(rows, self.encoder, self.sources, self.batch_size)
        problem_of = dict(reversed(problems))  # the first problem named for each recording
        matrix = np.zeros((len(rows), EMBEDDING_DIM), np.float32)
        failed: list[str] = []
        for i, row in enumerate(rows):
            vector = computed.get(row[JOIN_KEY])
            if vector is None:
                failed.append(problem_of.get(row["audio_uri"], "was not embedded"))
            else:
                matrix[i] = vector
                failed.append("")
        n = len(rows)
        return {
            JOIN_KEY: batch[JOIN_KEY],
            "embedding": matrix,
            "audio_uri": batch["audio_uri"],
            "problem": np.array(failed, dtype=object),
            "model_id": np.array([self.encoder.model_id] * n, dtype=object),
            "worker": np.array([self.worker] * n, dtype=object),
        }


@dataclass
class RayRun:
    """What the last run did: blocks sent, clips answered per worker (``host:pid``), and
    the seconds until the first answer (starting the actors and loading the model)."""

    blocks: int = 0
    clips_per_worker: Counter[str] = field(default_factory=Counter)
    first_answer_s: float | None = None


class RayEmbedding:
    """Executor ``ray`` (see the module docstring); a
    :class:`~hear_features.featurestore.materialize.ClipEmbedding`."""

    def __init__(
        self,
        settings: EncoderSettings,
        sources: AudioSources,
        config: HearEngineConfig,
        model_id: Callable[[], str],
    ) -> None:
        _import_ray()  # a missing extra is a configuration error, said at start-up
        self.settings = settings
        self.sources = sources
        self.config = config
        self.model_id = model_id
        self.last_run = RayRun()

    def __call__(
        self, rows: list[dict[str, Any]], on_batch: Callable[[int], Any] | None
    ) -> tuple[dict[str, np.ndarray], list[Problem]]:
        ray = _import_ray()
        expected_model = self.model_id()
        blocks = recording_blocks(rows, self.settings.batch_size)
        run = self.last_run = RayRun(blocks=len(blocks))
        pending = {row[JOIN_KEY] for row in rows}
        computed: dict[str, np.ndarray] = {}
        problems: dict[Problem, None] = {}  # ordered set
        with ray_session(self.config.ray_address) as fixed_size, _quiet_progress(ray):
            workers = min(self.config.workers, len(blocks))
            self._check_resources(ray, workers, fixed_size)
            log.info(
                "embedding %d clips in %d blocks on %d Ray workers", len(rows), len(blocks), workers
            )
            with warnings.catch_warnings():
                # Ray 2.60 deprecates passing actor options such as these two without
                # naming a replacement yet; the extra pins Ray below their removal.
                warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
                results = ray.data.from_arrow(blocks).map_batches(
                    EncoderActor.bound(self.settings, self.sources, self.config.cpus_per_worker),
                    compute=ray.data.ActorPoolStrategy(size=workers),
                    num_cpus=self.config.cpus_per_worker,
                    num_gpus=self.config.gpus_per_worker,
                    batch_size=None,  # one block (whole recordings) per call
                    batch_format="numpy",
                    max_restarts=self.config.max_retries,
                    max_task_retries=self.config.max_retries,
                )
            started = time.perf_counter()
            for batch in _user_errors(results.iter_batches(batch_size=None, batch_format="numpy")):
                if run.first_answer_s is None:
                    run.first_answer_s = time.perf_counter() - started
                n = len(batch[JOIN_KEY])
                for i in range(n):
                    clip_id, worker = str(batch[JOIN_KEY][i]), str(batch["worker"][i])
                    if clip_id not in pending:
                        raise MaterializationError(
                            f"Ray answered clip {clip_id} twice or unasked (worker {worker}); "
                            "nothing was stored"
                        )
                    pending.discard(clip_id)
                    run.clips_per_worker[worker] += 1
                    if str(batch["model_id"][i]) != expected_model:
                        raise ModelMismatchError(
                            f"Ray worker {worker} loaded {batch['model_id'][i]}, but this "
                            f"process expects {expected_model}: every node must see the same "
                            "model; nothing was stored"
                        )
                    problem = str(batch["problem"][i])
                    if problem:
                        problems[(str(batch["audio_uri"][i]), problem)] = None
                    else:
                        computed[clip_id] = batch["embedding"][i].copy()
                log.debug("%d clips back from Ray worker(s) %s", n, sorted(set(batch["worker"])))
                if on_batch is not None:
                    on_batch(n)
        if pending:
            raise MaterializationError(
                f"Ray returned no result for {len(pending)} clip(s); nothing was stored"
            )
        log.info(
            "Ray embedded %d clips on %d workers: %s",
            len(computed),
            len(run.clips_per_worker),
            dict(run.clips_per_worker),
        )
        return computed, list(problems)

    def _check_resources(self, ray: Any, workers: int, fixed_size: bool) -> None:
        """Say at once what the cluster cannot run, rather than wait for it for ever: an
        error when a Ray started for this run (which cannot grow) lacks the GPUs or CPUs
        of the actors, a warning on a cluster joined (an autoscaler may add nodes)."""
        total = ray.cluster_resources()
        for resource, per_worker, key in (
            ("GPU", self.config.gpus_per_worker, "gpus_per_worker"),
            ("CPU", self.config.cpus_per_worker, "cpus_per_worker"),
        ):
            have = total.get(resource, 0)
            if workers * per_worker <= have:
                continue
            message = (
                f"batch_engine: {workers} workers x {key} {per_worker:g} need "
                f"{workers * per_worker:g} {resource}(s); the Ray cluster has {have:g}"
            )
            if fixed_size:
                raise ConfigError(message)
            log.warning("%s: Ray will wait until the cluster has them", message)


def recording_blocks(rows: list[dict[str, Any]], clips_per_block: int) -> list[pa.Table]:
    """The clips as Arrow tables of whole recordings, about ``clips_per_block`` clips each
    (a longer recording gets a table of its own), in the order given."""
    by_uri: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_uri.setdefault(row["audio_uri"], []).append(row)
    blocks: list[pa.Table] = []
    current: list[dict[str, Any]] = []
    for clips in by_uri.values():
        if current and len(current) + len(clips) > clips_per_block:
            blocks.append(pa.Table.from_pylist(current, schema=CLIP_SCHEMA))
            current = []
        current.extend(clips)
    if current:
        blocks.append(pa.Table.from_pylist(current, schema=CLIP_SCHEMA))
    return blocks


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[bool]:
    """Ray for the duration of a run: the session this process already joined (a test, a
    notebook, a job submitted to the cluster), else ``ray.init(address)``, left at the end.
    ``None`` starts a local Ray (or joins ``RAY_ADDRESS`` when that is set). Yields
    whether the Ray was started here (a local Ray, whose resources cannot grow)."""
    ray = _import_ray()
    if ray.is_initialized():
        yield False
        return
    local = address is None and not os.environ.get("RAY_ADDRESS")
    options: dict[str, Any] = {"address": address}
    if local:
        options["include_dashboard"] = False
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"batch_engine: cannot reach Ray at {address!r}: {exc}") from exc
    try:
        yield local
    finally:
        ray.shutdown()


def _user_errors(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """The batches; an error of ours raised in a worker (a model it cannot load, say) is
    raised here as itself, not wrapped in Ray's task error and its remote traceback."""
    try:
        yield from batches
    except Exception as exc:
        cause: BaseException | None = exc
        seen: set[int] = set()
        while cause is not None and id(cause) not in seen:
            if isinstance(cause, HearFeaturesError):
                log.debug("raised in a Ray worker", exc_info=exc)
                raise cause from None
            seen.add(id(cause))
            cause = getattr(cause, "cause", None) or cause.__cause__
        raise


@contextlib.contextmanager
def _quiet_progress(ray: Any) -> Iterator[None]:
    """Feast's progress bar counts the clips; Ray Data's own bars would draw over it."""
    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.enable_progress_bars = before


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(
            "batch_engine: executor ray needs Ray: pip install 'hear-features[ray]'"
        ) from exc
    return ray
