"""RFC 9457 problem details, as every error answer carries them."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["FieldError", "Problem"]


class FieldError(BaseModel):
    """One offending field of an `invalid_request`."""

    field: str = Field(description="Dotted location, e.g. `body.changes.3.path`.")
    message: str


class Problem(BaseModel):
    """An error answer (`application/problem+json`)."""

    type: str = Field(default="about:blank", description="A URI naming the problem type.")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable snake_case identifier, e.g. `invalid_path`.")
    errors: list[FieldError] | None = Field(
        default=None, description="For `invalid_request`: each offending field."
    )
    reason: str | None = Field(default=None, description="For `cursor_expired`: why.")
    missing_chunks: list[int] | None = Field(
        default=None, description="For `missing_chunks`: the indexes still to send."
    )
