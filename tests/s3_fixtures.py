"""Fixtures: a real S3-compatible server on loopback for the session (moto's server, over HTTP), and a fresh
bucket per test with the ``object_store`` settings that point at it (credentials given as settings, as a
deployment gives them through the environment)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest

from atrium.store.objects.settings import ObjectStoreSettings

S3_ACCESS_KEY = "atrium-test-access"
S3_SECRET_KEY = "atrium-test-secret-0123456789abcdef"
_buckets = itertools.count(1)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_settings_for(endpoint: str, bucket: str, **extra: object) -> ObjectStoreSettings:
    return ObjectStoreSettings.model_validate({
        "backend": "s3", "bucket": bucket, "endpoint_url": endpoint, "region": "us-east-1",
        "access_key_id": S3_ACCESS_KEY, "secret_access_key": S3_SECRET_KEY, "addressing_style": "path", **extra})


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_ACCESS_KEY,
                          aws_secret_access_key=S3_SECRET_KEY)
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()


def bucket_keys(endpoint: str, name: str) -> list[str]:
    """Every key in bucket ``name`` (read with boto3, another client than the adapter's)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_ACCESS_KEY,
                          aws_secret_access_key=S3_SECRET_KEY)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=name)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))
    finally:
        client.close()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    name = f"atrium-test-{next(_buckets)}"
    make_bucket(s3_endpoint, name)
    return name


@pytest.fixture
def s3_settings(s3_endpoint: str, s3_bucket: str) -> ObjectStoreSettings:
    return s3_settings_for(s3_endpoint, s3_bucket)
