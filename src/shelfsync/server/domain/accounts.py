"""Users, devices and refresh tokens as the domain sees them."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime

from shelfsync.server.domain.errors import InvalidInput

__all__ = [
    "ConflictPolicy",
    "Device",
    "DeviceType",
    "RefreshToken",
    "SyncFilter",
    "User",
    "validate_device_name",
    "validate_username",
]

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_DEVICE_NAME_CHARS = 100
MAX_FILTER_PATTERNS = 200
MAX_FILTER_PATTERN_CHARS = 1024


class DeviceType(enum.StrEnum):
    """What kind of machine a device is (protocol section 5)."""

    DESKTOP = "desktop"  # a workstation that stays put
    LAPTOP = "laptop"  # a portable computer
    MOBILE = "mobile"  # a phone
    TABLET = "tablet"  # a tablet
    SERVER = "server"  # a headless machine
    BROWSER = "browser"  # the web page
    OTHER = "other"  # anything else


class ConflictPolicy(enum.StrEnum):
    """What the server does with a device's conflicts (protocol section 8)."""

    MANUAL = "manual"  # the conflict waits for a person to resolve it
    KEEP_BOTH = "keep_both"  # resolved at once: the client's version is saved beside


@dataclass(frozen=True, slots=True)
class SyncFilter:
    """Selective sync: a device's feed carries only matching paths."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        patterns = self.include + self.exclude
        if len(patterns) > MAX_FILTER_PATTERNS:
            raise InvalidInput(f"sync_filter holds more than {MAX_FILTER_PATTERNS} patterns")
        for pattern in patterns:
            if not pattern or len(pattern) > MAX_FILTER_PATTERN_CHARS or "\x00" in pattern:
                raise InvalidInput(
                    f"sync_filter patterns must be 1-{MAX_FILTER_PATTERN_CHARS} characters, no NUL"
                )


@dataclass(frozen=True, slots=True)
class User:
    """An account; `generation` grows when its password changes, ending old sessions."""

    id: str
    username: str
    password_hash: str
    generation: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Device:
    """A registered device; `token_generation` grows on every token rotation."""

    id: str
    user_id: str
    name: str
    device_type: DeviceType
    os: str | None
    client_version: str | None
    enabled: bool
    token_generation: int
    created_at: datetime
    last_seen_at: datetime | None
    last_sync_at: datetime | None
    acked_seq: int | None
    sync_filter: SyncFilter = field(default_factory=SyncFilter)
    conflict_policy: ConflictPolicy = ConflictPolicy.MANUAL


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """One link of a rotating refresh-token chain (`family_id` names the chain)."""

    id: str
    user_id: str
    family_id: str
    user_generation: int
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked: bool


def validate_username(name: str) -> str:
    """Usernames are ASCII words so they are safe in logs, URLs and shells."""
    if not _USERNAME.fullmatch(name):
        raise InvalidInput(
            "username must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_device_name(name: str) -> str:
    stripped = name.strip()
    if not stripped or len(stripped) > MAX_DEVICE_NAME_CHARS:
        raise InvalidInput(f"device name must be 1-{MAX_DEVICE_NAME_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise InvalidInput("device name must not contain control characters")
    # Device names end up in conflict file names: keep path separators out.
    if "/" in stripped or "\\" in stripped:
        raise InvalidInput("device name must not contain '/' or '\\'")
    return stripped
