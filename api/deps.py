"""FastAPI dependencies, declared once as ``Annotated`` aliases: the worker, and who is
calling.

- :data:`WorkerDep`: the worker of this process, ready to serve (503 until then).
- :data:`CallerDep`: the :class:`~hear_features.api.auth.Caller` behind the request's
  ``X-API-Key`` (401 without a valid key on a server that has keys; the anonymous read
  caller on a key-less loopback server), charged one token of its rate limit (429 with
  ``Retry-After`` when its bucket is empty). A route that shapes its answer by what the
  caller may see takes this.
- :data:`AdminDep`: the same, and 403 unless the key has the admin role. Routes that
  change or delete stored data take it::

      @router.delete("/{clip_id}")
      async def forget_clip(clip_id: str, admin: AdminDep, worker: WorkerDep) -> ...:

- :data:`Authorized` / :data:`AdminOnly`: the same two checks for a router's or a route's
  ``dependencies=[...]`` when the route itself does not need the caller.

FastAPI runs a dependency once per request however many times it is named, so a router's
``Authorized`` and a route's ``CallerDep`` authenticate (and charge) once. All of them are
``async def`` although they do not await: FastAPI runs a plain ``def`` dependency in its
thread pool, which cost more than the rest of a vector search.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader
from hear_features.api.auth import Caller
from hear_features.api.models import Filters
from hear_features.api.worker import Worker

from hear_features.errors import NotReady


async def get_worker(request: Request) -> Worker:
    worker: Worker | None = getattr(request.app.state, "worker", None)
    if worker is None or not worker.ready:
        raise NotReady("the service is still loading its index and encoder")
    return worker


#: The ``X-API-Key`` header, as an OpenAPI security scheme (the docs page's "Authorize").
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    scheme_name="APIKey",
    description="An API key of this server (not needed on a key-less server).",
    auto_error=False,  # a missing key is ours to judge: fine on a key-less server
)


async def authenticate(
    request: Request, x_api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None
) -> Caller:
    """The caller named by ``X-API-Key``, charged one request of its rate limit."""
    caller = request.app.state.keys.identify(x_api_key)
    request.app.state.rate_limiter.charge(caller)
    request.state.caller = caller
    return caller


async def current_caller(request: Request) -> Caller:
    """The caller :func:`authenticate` found for this request (every ``/v1`` router
    declares :data:`Authorized`, which runs first), or found now (charged once either way).

    Why not ``Depends(authenticate)`` again: FastAPI solves a dependency's own parameters
    every time it is named, before it looks in its per-request cache, so each mention of
    ``authenticate`` read and checked the key header again (about 30 us a time, several
    times per search)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:
        caller = await authenticate(request, request.headers.get(API_KEY_HEADER.model.name))
    return caller


#: Who is calling (401 without a valid key, 429 over its rate limit).
CallerDep = Annotated[Caller, Depends(current_caller)]


async def require_admin(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    """The caller, if its key has the admin role (403 otherwise)."""
    caller.require_admin("this request")
    return caller


#: The caller, who must hold an admin key (401 / 403 otherwise).
AdminDep = Annotated[Caller, Depends(require_admin)]
FilterField = Annotated[list[str] | None, Query(description="Repeat for any of several values.")]


async def filter_query(
    request: Request,
    label: FilterField = None,
    subject_id: FilterField = None,
    dataset: FilterField = None,
    device: FilterField = None,
    recording_id: FilterField = None,
) -> Filters:
    """The named filters, and any query parameter the route does not declare itself as a
    filter on that field (a study column: ``?gender=f&age=41``; the search refuses an
    unknown one with 422)."""
    named = {
        "label": label,
        "subject_id": subject_id,
        "dataset": dataset,
        "device": device,
        "recording_id": recording_id,
    }
    route = request.scope.get("route")
    own = {p.alias for p in getattr(getattr(route, "dependant", None), "query_params", [])}
    params = request.query_params
    extra = {name: params.getlist(name) for name in params if name not in {*named, *own}}
    return Filters.from_fields("query", {**named, **extra})


#: Metadata filters given as query parameters (``?label=cough&label=breath``), and study
#: columns by name (``?gender=f``).
FilterQuery = Annotated[Filters, Depends(filter_query)]
#: The worker of this process, ready to serve (503 until then).
WorkerDep = Annotated[Worker, Depends(get_worker)]
#: For ``dependencies=[...]``: requests must carry a valid key when the server has keys.
Authorized = Depends(authenticate)
#: For ``dependencies=[...]``: requests must carry an admin key.
AdminOnly = Depends(require_admin)
