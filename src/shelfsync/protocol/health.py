"""Operations bodies (protocol section 11)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

__all__ = ["Health"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
