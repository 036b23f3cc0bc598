"""Deleting data for good (``hear-features forget``): admin keys only.

``DELETE /v1/clips/{clip_id}``, ``/v1/recordings/{recording_id}`` and
``/v1/subjects/{subject_id}``, and ``POST /v1/forget`` with the CLI's selectors. The
audit log names the admin key (``api-key:<name>``). Unknown ids are a 404; a table
held by ``feast materialize`` or ``register`` for longer than :data:`LOCK_WAIT_S` is a
409 (try again).

Who stops returning the clips when: every worker at once for what it reads from the
online store (search hits and clip look-ups read each row after FAISS answers, and a
deleted row is skipped); the worker that handled the request also drops the ids from its
in-memory index at once, other workers at their next index refresh (``refresh_s``,
1 s by default), so their result lists are full again from then on.
"""

from __future__ import annotations

from fastapi import APIRouter
from hear_features.api.auth import Caller
from hear_features.api.deps import AdminDep, WorkerDep
from hear_features.api.models import ForgetRequest, ForgetResponse, error_responses
from hear_features.api.requests import JsonRoute
from hear_features.api.worker import Worker
from starlette.concurrency import run_in_threadpool

from hear_features.featurestore.forget import Selector, forget

router = APIRouter(prefix="/v1", tags=["deletion"], route_class=JsonRoute)
ERRORS = error_responses(401, 403, 404, 409, 422, 429, 503)
#: Seconds a request waits for a table a writer holds before a 409.
LOCK_WAIT_S = 60.0


@router.delete("/clips/{clip_id}", response_model=ForgetResponse, responses=ERRORS)
async def forget_clip(clip_id: str, admin: AdminDep, worker: WorkerDep) -> ForgetResponse:
    """Delete one clip (one 2 s window) from every store, for good."""
    return await _forget(worker, admin, Selector.of(clip_id=[clip_id]), dry_run=False)


@router.delete("/recordings/{recording_id}", response_model=ForgetResponse, responses=ERRORS)
async def forget_recording(recording_id: str, admin: AdminDep, worker: WorkerDep) -> ForgetResponse:
    """Delete every clip of a recording from every store, for good."""
    return await _forget(worker, admin, Selector.of(recording_id=[recording_id]), dry_run=False)


@router.delete("/subjects/{subject_id}", response_model=ForgetResponse, responses=ERRORS)
async def forget_subject(subject_id: str, admin: AdminDep, worker: WorkerDep) -> ForgetResponse:
    """Delete every clip of a participant from every store, for good (consent withdrawn)."""
    return await _forget(worker, admin, Selector.of(subject_id=[subject_id]), dry_run=False)


@router.post("/forget", response_model=ForgetResponse, responses=ERRORS)
async def forget_selected(
    body: ForgetRequest, admin: AdminDep, worker: WorkerDep
) -> ForgetResponse:
    """Delete every clip matching any of the ids, as ``hear-features forget`` does
    (``dry_run``: only count what would go)."""
    selector = Selector.of(
        clip_id=body.clip_ids,
        recording_id=body.recording_ids,
        subject_id=body.subject_ids,
        dataset=body.datasets,
    )
    return await _forget(worker, admin, selector, dry_run=body.dry_run)


async def _forget(
    worker: Worker, admin: Caller, selector: Selector, *, dry_run: bool
) -> ForgetResponse:
    # Not in a work slot: a deletion must not be cut off by a request's time budget,
    # and the tables' file locks already make deletions take turns.
    report = await run_in_threadpool(
        lambda: forget(
            worker.store,
            selector,
            who=f"api-key:{admin.name}",
            dry_run=dry_run,
            lock_timeout_s=LOCK_WAIT_S,
        )
    )
    if not dry_run:
        await worker.refresh()
    plan = report.plan
    return ForgetResponse(
        forget_id=None if dry_run or not plan.clip_ids else plan.forget_id,
        dry_run=dry_run,
        counts=plan.counts,
        unmatched=plan.unmatched,
        completed=report.resumed,
    )
