"""Test certificates made with the `openssl` CLI: a CA, a broker certificate for 127.0.0.1, a client certificate.

Kafka reads PEM key stores directly (`ssl.keystore.type=PEM`), so nothing is converted to
JKS. The client's key is encrypted with a password, as `AGENTSTREAM_KAFKA_SSL_KEY_PASSWORD`
expects; the broker's is not (Kafka's PEM store wants no password for a plain PKCS#8 key).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"


@dataclass(frozen=True)
class Certificates:
    folder: Path
    key_password: str

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def broker_keystore(self) -> Path:
        """The broker's private key followed by its certificate: a PEM key store."""
        return self.folder / "broker-keystore.pem"

    @property
    def client_cert(self) -> Path:
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        """The client's key, encrypted with `key_password`."""
        return self.folder / "client-key.pem"


def openssl_missing() -> str | None:
    return None if shutil.which("openssl") else "the `openssl` CLI is not installed (Debian: apt-get install openssl)"


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}")


def _signed(folder: Path, name: str, extensions: str) -> tuple[Path, Path]:
    """A new RSA key and a certificate for it signed by the folder's CA: (key, certificate)."""
    key, request, cert, ext = (folder / f"{name}.{suffix}" for suffix in ("key", "csr", "pem", "ext"))
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-out", str(request), "-subj", f"/CN=agentstream test {name}")
    ext.write_text(extensions)
    _openssl("x509", "-req", "-in", str(request), "-CA", str(folder / "ca.pem"), "-CAkey", str(folder / "ca.key"),
             "-CAcreateserial", "-out", str(cert), "-days", DAYS, "-extfile", str(ext))
    return key, cert


def make_certificates(folder: Path, key_password: str) -> Certificates:
    """A CA, a broker key store valid for 127.0.0.1 and localhost, and a client certificate with an encrypted key."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / "ca.key"),
             "-out", str(folder / "ca.pem"), "-days", DAYS, "-subj", "/CN=agentstream test CA")
    broker_key, broker_cert = _signed(folder, "broker", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    certs = Certificates(folder, key_password)
    certs.broker_keystore.write_text(broker_key.read_text() + broker_cert.read_text())
    client_key, _ = _signed(folder, "client", "basicConstraints=CA:FALSE\n")
    _openssl("pkcs8", "-topk8", "-in", str(client_key), "-out", str(certs.client_key), "-v2", "aes-256-cbc",
             "-passout", f"pass:{key_password}")
    client_key.unlink()  # only the encrypted copy remains
    return certs
