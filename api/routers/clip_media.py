"""GET /v1/clips/{clip_id}/audio and /v1/clips/{clip_id}/spectrogram.png.

Only registered clips: the window is cut from the recording named by the clip's
registration, after the audio-location policy (``audio_roots``) and the content hash
have been checked, so what plays is what was embedded. Unknown ids answer 404, a
location outside the audio roots 403, a recording that is gone 410, one whose bytes
changed 409.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from hear_features.api.deps import Authorized
from hear_features.api.explorer_state import ExplorerDep, ExplorerState
from hear_features.api.models import error_responses
from hear_features.api.requests import JsonRoute

router = APIRouter(
    prefix="/v1/clips", tags=["clips"], dependencies=[Authorized], route_class=JsonRoute
)
ERRORS = error_responses(401, 403, 404, 409, 410, 422, 503)


def _binary(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    return {
        **ERRORS,
        200: {
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        },
    }


async def _media(
    render: Callable[[str], bytes], clip_id: str, explorer: ExplorerState, media_type: str
) -> Response:
    data = await explorer.worker.run(render, clip_id)
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-store"})


@router.get(
    "/{clip_id}/audio",
    response_class=Response,
    responses=_binary("audio/wav", "The clip's 2 s window: 16 kHz mono 16-bit PCM WAV."),
)
async def clip_audio(clip_id: str, explorer: ExplorerDep) -> Response:
    """The clip's 2 s window as the encoder saw it (16 kHz mono WAV, exactly 2.0 s)."""
    return await _media(explorer.wav, clip_id, explorer, "audio/wav")


@router.get(
    "/{clip_id}/spectrogram.png",
    response_class=Response,
    responses=_binary("image/png", "Log-mel spectrogram of the 2 s window (64 mel bands)."),
)
async def clip_spectrogram(clip_id: str, explorer: ExplorerDep) -> Response:
    """The clip's window as a log-mel spectrogram picture (low frequencies at the bottom)."""
    return await _media(explorer.spectrogram, clip_id, explorer, "image/png")
