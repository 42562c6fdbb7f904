"""One Settings object for the server, built from flags and environment by the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    login_max_failures: int = 5
    login_window_s: int = 15 * 60
    login_block_s: int = 5 * 60
    db_pool_size: int = 10
    retention_days: int = 30
    maintenance_interval_s: float = 600.0
    # argon2id cost; lower only where hashing speed matters more than strength
    # (the test suite). Hashes made with other costs still verify.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    max_file_size_bytes: int = 256 * 1024**3
    max_sessions_per_device: int = 64
    quota_bytes: int | None = None
    upload_expiry_s: int = 24 * 3600
    # Batch uploads and downloads of small files (protocol section 11.4): files
    # per request, the files' bytes per upload request, and the largest file a
    # batch carries (the default chunk size; larger files go in chunks).
    batch_max_files: int = 1000
    batch_max_bytes: int = 64 * 1024 * 1024
    batch_max_file_bytes: int = 8 * 1024 * 1024
    # Content up to this size is stored in the database instead of as a file
    # (batch uploads and small upload sessions; at most 1 MiB; 0: never).
    # Measured in docs/benchmarks.md: 64 KiB.
    inline_max_bytes: int = 64 * 1024
    # Request limits (api/limits.py): JSON bodies (chunk PUTs are bounded by
    # their chunk length), all header bytes together, and how long a body may
    # stall before the request is answered 408.
    max_json_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    body_idle_timeout_s: float = 60.0
    # uvicorn closes an idle keep-alive connection after this long.
    keep_alive_timeout_s: int = 5

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'shelfsync.db').resolve()}"

    @property
    def content_dir(self) -> Path:
        return self.data_dir / "content"

    @property
    def secret_path(self) -> Path:
        return self.data_dir / "secret.key"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Defaults, then SHELFSYNC_* variables, then explicit overrides (flags)."""
        env = os.environ
        values: dict[str, object] = {}
        if "SHELFSYNC_DATA_DIR" in env:
            values["data_dir"] = Path(env["SHELFSYNC_DATA_DIR"])
        if env.get("SHELFSYNC_DATABASE_URL"):
            values["database_url"] = env["SHELFSYNC_DATABASE_URL"]
        if "SHELFSYNC_HOST" in env:
            values["host"] = env["SHELFSYNC_HOST"]
        for name, key in (
            ("port", "SHELFSYNC_PORT"),
            ("access_token_ttl_s", "SHELFSYNC_ACCESS_TOKEN_TTL_S"),
            ("refresh_token_ttl_s", "SHELFSYNC_REFRESH_TOKEN_TTL_S"),
            ("login_max_failures", "SHELFSYNC_LOGIN_MAX_FAILURES"),
            ("db_pool_size", "SHELFSYNC_DB_POOL_SIZE"),
            ("argon2_time_cost", "SHELFSYNC_ARGON2_TIME_COST"),
            ("argon2_memory_kib", "SHELFSYNC_ARGON2_MEMORY_KIB"),
            ("retention_days", "SHELFSYNC_RETENTION_DAYS"),
            ("max_file_size_bytes", "SHELFSYNC_MAX_FILE_SIZE_BYTES"),
            ("max_sessions_per_device", "SHELFSYNC_MAX_SESSIONS_PER_DEVICE"),
            ("quota_bytes", "SHELFSYNC_QUOTA_BYTES"),
            ("upload_expiry_s", "SHELFSYNC_UPLOAD_EXPIRY_S"),
            ("batch_max_files", "SHELFSYNC_BATCH_MAX_FILES"),
            ("batch_max_bytes", "SHELFSYNC_BATCH_MAX_BYTES"),
            ("batch_max_file_bytes", "SHELFSYNC_BATCH_MAX_FILE_BYTES"),
            ("inline_max_bytes", "SHELFSYNC_INLINE_MAX_BYTES"),
            ("max_json_body_bytes", "SHELFSYNC_MAX_JSON_BODY_BYTES"),
            ("max_header_bytes", "SHELFSYNC_MAX_HEADER_BYTES"),
            ("keep_alive_timeout_s", "SHELFSYNC_KEEP_ALIVE_TIMEOUT_S"),
        ):
            if key in env:
                values[name] = int(env[key])
        if "SHELFSYNC_BODY_IDLE_TIMEOUT_S" in env:
            values["body_idle_timeout_s"] = float(env["SHELFSYNC_BODY_IDLE_TIMEOUT_S"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
