"""The local stack's S3-compatible object store: step logs (compute logs) go where they go on the cluster.

Server: moto's S3 backend behind `moto_server`, a locked dependency of the platform environment (PyPI).
Chosen because it installs from the package index this project already uses, with no binary to fetch,
starts in about a second and speaks the S3 API boto3 and dagster-aws use. MinIO is not on PyPI, Debian
12 packages no S3 server, and npm's S3 servers are unmaintained. Its objects live in memory: they are
gone when the server stops (the stack's run history in Postgres stays; older step logs do not).

Credentials are throwaway values generated per stack, passed only as AWS_* variables (as the cluster's
Secret does); the bucket name and prefix are the derived instance's own.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from dagster_platform.local.config import S3_ENDPOINT_ENV
from dagster_platform.net import HOST

REGION = "us-east-1"


@dataclass(frozen=True)
class ObjectStore:
    port: int
    access_key: str
    secret_key: str

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        """What boto3 (dagster-aws) in webserver, daemon and run workers reads: loopback only."""
        return {
            S3_ENDPOINT_ENV: self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            # Never a developer's own AWS profile or files: only the variables above count.
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
        )

    def ensure_bucket(self, bucket: str) -> None:
        client = self.client()
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def new_credentials() -> tuple[str, str]:
    return f"local{secrets.token_hex(6)}", secrets.token_urlsafe(24)


def server_command(port: int) -> list[str]:
    return [str(Path(sys.executable).parent / "moto_server"), "-H", HOST, "-p", str(port)]
