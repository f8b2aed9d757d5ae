"""Local object-storage servers for the warehouse tests, one per kind of store, each started by the tests on
127.0.0.1: moto (S3, in server mode), Azurite (Microsoft's Azure Storage server, from npm: tests/azurite/) and
tests/support/gcs_emulator.py (Google Cloud Storage's XML API). Each server's `environment()` is what a user sets
for that store (warehouse/object_stores.py), pointed at the local server."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import shutil
import subprocess
from email.utils import formatdate
from pathlib import Path

from tests.support.net import free_port, wait_for_port

AZURITE = Path(__file__).resolve().parent.parent / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's one account and its published key (the same on every machine: it protects nothing)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_ACCESS_KEY = "AKIAENRICHTEST7Q2X9Z"
S3_SECRET_KEY = "enrich-test-secret/Zq8w3Xv5Lp0Rt7Yu2Io9"


class S3Server:
    scheme = "s3"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def environment(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                "AWS_ENDPOINT_URL": self.url, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def secrets(self) -> tuple[str, ...]:
        return S3_ACCESS_KEY, S3_SECRET_KEY

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client("s3", region_name="us-east-1", endpoint_url=self.url,
                              aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass

    def stop(self) -> None:
        self.server.stop()


class GcsServer:
    scheme = "gs"

    def __init__(self, folder: Path) -> None:
        from tests.support.gcs_emulator import GcsEmulator

        self.emulator = GcsEmulator().start()
        self.account_file = self.emulator.service_account_file(folder)

    def environment(self) -> dict[str, str]:
        # object_store's emulator hook: a service-account file naming the server, without OAuth
        return {"GOOGLE_SERVICE_ACCOUNT": str(self.account_file), "GOOGLE_ALLOW_HTTP": "true"}

    def secrets(self) -> tuple[str, ...]:
        return ()

    def create_bucket(self, name: str) -> None:
        self.emulator.create_bucket(name)

    def stop(self) -> None:
        self.emulator.stop()


class AzureServer:
    scheme = "az"

    @staticmethod
    def available() -> bool:
        return AZURITE.exists() and shutil.which("node") is not None

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence",
             "--silent", "--skipApiVersionCheck"],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, process=self.process)
        except OSError:
            self.stop()
            raise RuntimeError(f"Azurite did not start: {self.process.stderr.read()[-500:]!r}") from None
        self.url = f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": self.url,
                "AZURE_ALLOW_HTTP": "true", "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
                "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY}

    def secrets(self) -> tuple[str, ...]:
        return (AZURITE_KEY,)

    def create_bucket(self, name: str) -> None:
        """Create a container: one Shared Key signed request (Azure's REST API; no SDK needed for one call)."""
        date, version = formatdate(usegmt=True), "2021-08-06"
        to_sign = ("PUT\n" + "\n" * 11 + f"x-ms-date:{date}\nx-ms-version:{version}\n"
                   f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container")
        signature = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(),
                                              hashlib.sha256).digest()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("PUT", f"/{AZURITE_ACCOUNT}/{name}?restype=container", body=b"",
                     headers={"x-ms-date": date, "x-ms-version": version,
                              "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature}"})
        reply = conn.getresponse()
        body = reply.read()
        if reply.status not in (201, 409):  # 409: it exists already
            raise RuntimeError(f"Azurite refused to create {name}: {reply.status} {body[:200]!r}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.stderr.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
