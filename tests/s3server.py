"""A real S3-compatible server on loopback for the object-store tests: moto's server mode, in its own
process, reached over HTTP by s3fs exactly as MinIO or AWS would be."""
from __future__ import annotations

import sys
from pathlib import Path

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

    def filesystem(self):  # type: ignore[no-untyped-def]
        import s3fs

        return s3fs.S3FileSystem(key=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"], secret=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_url=self.url, skip_instance_cache=True)

    def stop(self) -> None:
        self.proc.stop(10)
