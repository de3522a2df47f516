"""TLS: verified by default, an optional CA file, and probing an IP while verifying the worker's host name."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from probekit import ScriptedWorker

from trafficd.policy.schema import Probe
from trafficd.probe.prober import ProbeConfigError, Prober, Target

HOST = "worker.test"


@dataclass
class Pki:
    ca_file: Path
    server_ctx: ssl.SSLContext


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throw-away CA and a server certificate for worker.test (not for 127.0.0.1), made in the test."""
    d = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("trafficd test CA"))
        .issuer_name(_name("trafficd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(HOST))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = d / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = d / "server.pem", d / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return Pki(ca_file, ctx)


@pytest.fixture
async def tls_worker(pki: Pki) -> AsyncIterator[ScriptedWorker]:
    w = await ScriptedWorker().start(ssl_context=pki.server_ctx)
    yield w
    await w.stop()


def cfg(**tls: object) -> Probe:
    return Probe.model_validate({"tls": tls})


async def test_untrusted_certificate_is_tls_error_by_default(tls_worker: ScriptedWorker) -> None:
    """Verification is on by default: a certificate from an unknown CA gives tls_error."""
    async with Prober() as p:
        r = await p.probe_detailed(Target("r1", "w1", "m1", f"https://{HOST}:{tls_worker.port}/ok", "127.0.0.1"))
    assert r.sample.reason == "tls_error" and r.sample.status is None
    assert "certificate" in r.detail.lower()


async def test_ip_address_with_host_name_verification_succeeds(tls_worker: ScriptedWorker, pki: Pki) -> None:
    """With the CA file, probing 127.0.0.1 for https://worker.test verifies the certificate for worker.test."""
    async with Prober(cfg(ca_file=str(pki.ca_file))) as p:
        s = await p.probe(Target("r1", "w1", "m1", f"https://{HOST}:{tls_worker.port}/ok", "127.0.0.1"))
    assert s.ok and s.tokens == 2 and s.connect_ms is not None
    assert tls_worker.headers[0]["Host"] == f"{HOST}:{tls_worker.port}"


async def test_wrong_host_name_is_tls_error(tls_worker: ScriptedWorker, pki: Pki) -> None:
    """The host name is really checked: the same server under another name, or by bare IP, gives tls_error."""
    async with Prober(cfg(ca_file=str(pki.ca_file))) as p:
        other = await p.probe(Target("r1", "w1", "m1", f"https://other.test:{tls_worker.port}/ok", "127.0.0.1"))
        bare = await p.probe(Target("r1", "w1", "m1", f"https://127.0.0.1:{tls_worker.port}/ok"))
    assert other.reason == "tls_error" and bare.reason == "tls_error"


async def test_verification_can_be_turned_off(tls_worker: ScriptedWorker) -> None:
    """tls.verify false accepts the untrusted certificate (explicit opt-out only)."""
    async with Prober(cfg(verify=False)) as p:
        s = await p.probe(Target("r1", "w1", "m1", f"https://127.0.0.1:{tls_worker.port}/ok"))
    assert s.ok


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    """A CA file that cannot be read is a ProbeConfigError at set-up, not a failed sample."""
    with pytest.raises(ProbeConfigError, match=r"probe\.tls\.ca_file"):
        Prober(cfg(ca_file=str(tmp_path / "missing.pem")))
