"""The archive's s3 kind: images as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...).

boto3 (the `s3` extra) is imported only when this kind is opened. Credentials: the settings' keys, else boto3's
own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr

from lineguard.config.seams import ArchiveSettings
from lineguard.services.results.archive import ImageGone

if TYPE_CHECKING:  # the stubs (boto3-stubs[s3], in the lint extra) only: boto3 is imported when the kind is opened
    from mypy_boto3_s3 import S3Client

KEY = "s3"


class Settings(ArchiveSettings):
    kind: Literal["s3"] = "s3"
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    prefix: str = Field("", description="put before every key, e.g. plant-a/")
    endpoint_url: str | None = Field(None, description="the S3 API's URL for a store other than AWS's")
    region: str | None = None
    access_key_id: str | None = Field(None, description="default: boto3's credential chain")
    secret_access_key: SecretStr | None = Field(None, description="set it by environment, not in the YAML")


class S3Store:
    def __init__(self, client: S3Client, bucket: str, prefix: str):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def _key(self, uri: str) -> str:
        start = f"s3://{self.bucket}/"
        if not uri.startswith(start):
            raise ImageGone(f"{uri} is not in the archive bucket {self.bucket}")
        return uri[len(start) :]

    def put(self, key: str, data: bytes, content_type: str) -> str:
        full = self.prefix + key
        with _unavailable(self.bucket):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, ContentType=content_type)
        return f"s3://{self.bucket}/{full}"

    def get(self, uri: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(uri))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise ImageGone(f"{uri}: no such object in the archive") from None

    def delete(self, uri: str) -> None:
        with _unavailable(self.bucket):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(uri))


@contextlib.contextmanager
def _unavailable(bucket: str) -> Iterator[None]:
    """botocore's errors (the store unreachable, refusing) as OSError: the archiver retries, never drops."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise OSError(f"S3 bucket {bucket}: {exc}") from exc


def open_archive(settings: Settings) -> S3Store:
    try:
        import boto3
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError("archive.kind s3 needs boto3: pip install 'lineguard[s3]'") from None
    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
    client = boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=secret,
    )
    return S3Store(client, settings.bucket, settings.prefix)
