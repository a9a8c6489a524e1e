"""The ``object_store`` section: where uploaded files wait for their ingestion job. Composed into ``Settings``
by ``atrium.settings``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator


class ObjectStoreSettings(BaseModel):
    """``backend``: ``local`` keeps uploads under ``data_dir/uploads`` (one machine); ``s3`` keeps them in a
    bucket of any S3-compatible store (AWS S3, MinIO, Ceph, R2...), so API replicas and ``atrium worker``
    processes on other machines share them.

    S3: ``bucket`` (it must exist), ``prefix`` (keys start with it), ``endpoint_url`` (unset: AWS),
    ``region``, ``addressing_style`` (``path`` for most self-hosted stores). Credentials: ``access_key_id``
    and ``secret_access_key`` (``ATRIUM_OBJECT_STORE__ACCESS_KEY_ID``/``__SECRET_ACCESS_KEY``), else the
    standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance or
    pod role). They are never logged nor shown."""

    backend: Literal["local", "s3"] = "local"
    bucket: str | None = Field(None, min_length=3, max_length=63)
    prefix: str = Field("atrium/uploads", max_length=200)
    endpoint_url: str | None = Field(None, max_length=500)
    region: str | None = Field(None, max_length=50)
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=10)  # per request, with the client's standard backoff
    max_connections: int = Field(20, ge=1, le=500)

    @field_validator("access_key_id", "secret_access_key", "session_token", "endpoint_url", "region", "bucket",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _s3_complete(self) -> ObjectStoreSettings:
        if self.backend == "s3" and self.bucket is None:
            raise ValueError("object_store.backend=s3 needs object_store.bucket")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("object_store.access_key_id and object_store.secret_access_key go together")
        return self
