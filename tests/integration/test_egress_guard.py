"""The egress guard over real HTTP to a local site: inner addresses refused by default (on the first request
and on every redirect hop), allowed by the allow-lists, and DNS rebinding defeated by connecting to the
address that was checked."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from atrium.guard.egress import EgressGuard, EgressSettings, FetchFailed, InvalidUrl, IPAddress, UrlNotAllowed
from atrium.guard.egress_transport import guarded_client
from tests.web_site import Site, serve_site


class ScriptedResolver:
    """Answers each lookup of a name with the next scripted answer, and counts lookups."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        script = self.answers[host]
        answer = script.pop(0) if len(script) > 1 else script[0]
        return [ipaddress.ip_address(a) for a in answer]


@pytest.fixture
def site() -> Iterator[Site]:
    with serve_site() as served:
        served.page("/", "<h1>Home</h1>")
        yield served


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::", "::", "ff02::1", "fd00:ec2::254", "100.100.100.200", "198.18.0.1", "240.0.0.1"])
def test_inner_addresses_are_refused_by_default(address: str) -> None:
    assert EgressGuard().refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert EgressGuard().refusal(ipaddress.ip_address(address)) is None


def test_allow_private_still_refuses_metadata_multicast_and_unspecified() -> None:
    guard = EgressGuard(EgressSettings(allow_private=True))
    assert guard.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert guard.refusal(ipaddress.ip_address("10.0.0.1")) is None
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "0.0.0.0", "224.0.0.1"):
        assert guard.refusal(ipaddress.ip_address(address)) is not None
    listed = EgressGuard(EgressSettings(allow_cidrs=[ipaddress.ip_network("169.254.169.254/32")]))
    assert listed.refusal(ipaddress.ip_address("169.254.169.254")) is None


async def test_urls_of_the_wrong_shape_are_invalid() -> None:
    guard = EgressGuard()
    for url in ("ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/", "http:///x", "nonsense"):
        with pytest.raises(InvalidUrl):
            await guard.check(url)


async def test_loopback_is_refused_by_default_over_real_http(site: Site) -> None:
    async with guarded_client(EgressGuard()) as client:
        with pytest.raises(UrlNotAllowed) as refused:
            await client.get(site.base + "/")
    assert site.requests == []  # refused before any connection
    assert "127.0.0.1" in refused.value.message  # the caller's own host, named as given


async def test_allow_private_reaches_the_local_site(site: Site) -> None:
    async with guarded_client(EgressGuard(EgressSettings(allow_private=True))) as client:
        response = await client.get(site.base + "/")
    assert response.status_code == 200 and b"Home" in response.content


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:{port}/",
                                    "http://[::1]:{port}/", "http://inner.test:{port}/"])
async def test_a_redirect_to_an_inner_address_is_refused(site: Site, target: str) -> None:
    """The first hop is allowed (its name is listed); the redirect's target is checked on its own."""
    site.redirect("/go", target.format(port=site.port))
    resolver = ScriptedResolver({"site.test": [["127.0.0.1"]], "inner.test": [["10.0.0.5"]]})
    guard = EgressGuard(EgressSettings(allow_hosts=["site.test"]), resolver)
    async with guarded_client(guard) as client:
        with pytest.raises(UrlNotAllowed) as refused:
            await client.get(f"http://site.test:{site.port}/go")
    assert site.paths() == ["/go"]
    assert "10.0.0.5" not in refused.value.message


async def test_dns_rebinding_connects_to_the_checked_address(site: Site) -> None:
    """The name answers an allowed address to the first lookup and a private one after: the request goes to
    the first (the one checked), resolved once, with the name kept in the Host header."""
    resolver = ScriptedResolver({"rebind.test": [["127.0.0.1"], ["10.0.0.9"]]})
    guard = EgressGuard(EgressSettings(allow_cidrs=[ipaddress.ip_network("127.0.0.1/32")]), resolver)
    async with guarded_client(guard) as client:
        response = await client.get(f"http://rebind.test:{site.port}/")
        assert response.status_code == 200 and b"Home" in response.content
        assert resolver.calls == ["rebind.test"]  # one lookup for one request: nothing resolved it again
        assert site.requests == [("/", f"rebind.test:{site.port}")]
        assert str(response.url) == f"http://rebind.test:{site.port}/"
        # The next request looks up again, gets the private answer, and is refused without connecting.
        with pytest.raises(UrlNotAllowed):
            await client.get(f"http://rebind.test:{site.port}/")
    assert len(site.requests) == 1


async def test_a_name_with_any_refused_answer_is_refused(site: Site) -> None:
    resolver = ScriptedResolver({"mixed.test": [["8.8.8.8", "127.0.0.1"]]})
    async with guarded_client(EgressGuard(resolver=resolver)) as client:
        with pytest.raises(UrlNotAllowed):
            await client.get(f"http://mixed.test:{site.port}/")
    assert site.requests == []


async def test_an_unresolvable_name_fails_to_fetch() -> None:
    class Nothing:
        async def resolve(self, host: str, port: int) -> list[IPAddress]:
            raise OSError("no such host")

    with pytest.raises(FetchFailed):
        await EgressGuard(resolver=Nothing()).check("http://nowhere.test/")


def _tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``tls.test`` (and its key), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls.test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("tls.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def tls_site(tmp_path: Path) -> Iterator[tuple[Site, ssl.SSLContext]]:
    cert_file, key_file = _tls_files(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cafile=str(cert_file))
    with serve_site(tls=server_context) as served:
        served.page("/", "<h1>Secure</h1>")
        yield served, client_context


async def test_https_to_the_pinned_address_verifies_the_name(tls_site: tuple[Site, ssl.SSLContext]) -> None:
    """TLS to the checked address still sends the name (SNI) and checks the certificate against it: the
    certificate for tls.test passes for tls.test and fails for another name answering the same address."""
    site, trust = tls_site
    resolver = ScriptedResolver({"tls.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    guard = EgressGuard(EgressSettings(allow_private=True), resolver)
    async with guarded_client(guard, timeout=5.0, verify=trust) as client:
        response = await client.get(f"https://tls.test:{site.port}/")
        assert response.status_code == 200 and b"Secure" in response.content
        assert site.requests[-1] == ("/", f"tls.test:{site.port}")
        with pytest.raises(httpx.ConnectError, match=r"(?i)certificate|hostname"):
            await client.get(f"https://other.test:{site.port}/")
