"""Deletion requests (``POST /v1/forget``) and what a deletion removed."""

from __future__ import annotations

from typing import Annotated, Any

from hear_features.api.models.text import Text
from hear_features.api.models.training import MAX_LIST
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

#: Ids of one kind in a deletion request (any number up to :data:`MAX_LIST`).
Ids = Annotated[list[Text], Field(default_factory=list, max_length=MAX_LIST)]


class ForgetRequest(BaseModel):
    """Which clips to delete for good: any clip that matches any of the ids."""

    model_config = ConfigDict(extra="forbid")

    clip_ids: Ids
    recording_ids: Ids
    subject_ids: Ids
    datasets: Ids
    dry_run: StrictBool = Field(False, description="Only count what would be removed.")

    @model_validator(mode="after")
    def _selects_something(self) -> ForgetRequest:
        if not (self.clip_ids or self.recording_ids or self.subject_ids or self.datasets):
            raise ValueError(
                "select the clips to forget: clip_ids, recording_ids, subject_ids or datasets"
            )
        return self


class ForgetResponse(BaseModel):
    """What a forget removed (or, for a dry run, would remove), per store."""

    forget_id: str | None = Field(description="The forget record in the audit log.")
    dry_run: bool
    counts: dict[str, Any]
    unmatched: dict[str, list[str]] = Field(description="Given ids that matched no clip.")
    completed: list[str] = Field(description="Interrupted forgets this request finished.")
