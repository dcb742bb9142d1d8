"""A real S3-compatible server on loopback for the object-store tests: moto's server mode, in its own
process, reached over HTTP exactly as MinIO or AWS would be."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import requests

from tests.conftest import Proc, free_port, subprocess_env, wait_until

# moto accepts any credentials; these only have to be present for botocore to sign requests.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "trainyard-test", "AWS_SECRET_ACCESS_KEY": "trainyard-test",
                  "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                         subprocess_env({}), log)

        def up() -> bool:
            assert self.proc.alive(), self.proc.output()
            try:
                return requests.get(self.url + "/moto-api/", timeout=2).status_code < 500
            except requests.RequestException:
                return False

        wait_until(up, 60, 0.2, "the S3 server")

    def env(self, bucket: str) -> dict[str, str]:
        """The settings that put artifacts in `bucket` on this server."""
        return {"TRAINYARD_ARTIFACT_URL": f"s3://{bucket}/artifacts", "TRAINYARD_S3_ENDPOINT_URL": self.url,
                **S3_CREDENTIALS}

    def objects(self) -> S3Objects:
        """What is on the server, read with a botocore client of the test's own (not the store under test)."""
        return S3Objects(self.url)

    def stop(self) -> None:
        self.proc.stop(10)


class S3Objects:
    """Objects on the test server, by "bucket/key" path."""

    def __init__(self, endpoint_url: str) -> None:
        import botocore.session
        from botocore.config import Config

        self.client: Any = botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint_url, region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}))

    def info(self, path: str) -> dict[str, Any]:
        """{"size": bytes}; botocore's ClientError (404) when there is no such object."""
        bucket, key = path.split("/", 1)
        return {"size": self.client.head_object(Bucket=bucket, Key=key)["ContentLength"]}

    def exists(self, path: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.info(path)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchBucket"):
                return False
            raise
        return True

    def cat(self, path: str) -> bytes:
        bucket, key = path.split("/", 1)
        with self.client.get_object(Bucket=bucket, Key=key)["Body"] as body:
            return body.read()
