"""Secure /metrics: the self-signed certificate, and the review verdicts and their cache."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from driftguard.kube import reviews
from driftguard.kube.errors import ApiError
from driftguard.runtime import selfsigned

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def key() -> selfsigned.Key:
    return selfsigned.new_key()


def test_certificate_verifies_with_its_own_key(key: selfsigned.Key) -> None:
    """The certificate's signature verifies with the public key it carries (sha256, PKCS #1 v1.5)."""
    cert = x509.load_der_x509_certificate(
        selfsigned.certificate(key, common_name="m", hosts=["localhost"], now=NOW)
    )
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())


def test_certificate_names_its_hosts_and_lasts_a_year(key: selfsigned.Key) -> None:
    """DNS names and IP addresses go in subjectAltName; valid from an hour ago for a year."""
    der = selfsigned.certificate(key, common_name="m", hosts=["pod-1", "127.0.0.1"], now=NOW)
    cert = x509.load_der_x509_certificate(der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["pod-1"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.not_valid_before_utc == datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
    assert cert.not_valid_after_utc == datetime(2027, 11, 26, 12, 0, tzinfo=UTC)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_private_key_matches_the_certificate(key: selfsigned.Key) -> None:
    """The PEM key loads (PKCS #1) and is the pair of the certificate's public key."""
    pem = selfsigned.pem("RSA PRIVATE KEY", selfsigned.private_key(key)).encode()
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.private_numbers().public_numbers.n == key.n
    assert loaded.private_numbers().d == key.d


class FakeConnection:
    """The API server's answers to TokenReview and SubjectAccessReview, counted."""

    def __init__(self, users: dict[str, str], allowed: set[str]) -> None:
        self.users, self.allowed = users, allowed
        self.posts: list[str] = []
        self.fail = False

    async def json(self, method: str, path: str, *, body: dict[str, Any]) -> dict[str, Any]:
        self.posts.append(path.rsplit("/", 1)[1])
        if self.fail:
            raise ApiError(503, "ServiceUnavailable", "down")
        if path == reviews.TOKEN_REVIEWS:
            user = self.users.get(body["spec"]["token"])
            return {"status": {"authenticated": user is not None, "user": {"username": user}}}
        return {"status": {"allowed": body["spec"]["user"] in self.allowed}}


class FakeCluster:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection


def reviewer(connection: FakeConnection) -> reviews.Reviewer:
    return reviews.Reviewer(FakeCluster(connection))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", (reviews.Verdict.UNAUTHENTICATED, "")),
        ("unknown", (reviews.Verdict.UNAUTHENTICATED, "")),
        ("t-nosy", (reviews.Verdict.FORBIDDEN, "nosy")),
        ("t-prom", (reviews.Verdict.ALLOWED, "prom")),
    ],
    ids=["no-token", "unknown-token", "no-right", "reader"],
)
async def test_verdicts(token: str, expected: tuple[reviews.Verdict, str]) -> None:
    """401 without a known user, 403 without the right, allowed with it."""
    connection = FakeConnection({"t-nosy": "nosy", "t-prom": "prom"}, allowed={"prom"})
    assert await reviewer(connection).review(token) == expected


async def test_verdict_is_kept_for_its_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token reviewed once is not reviewed again until TTL_S has passed."""
    now = [100.0]
    monkeypatch.setattr(reviews.time, "monotonic", lambda: now[0])
    connection = FakeConnection({"t-prom": "prom"}, allowed={"prom"})
    judge = reviewer(connection)
    for _ in range(3):
        await judge.review("t-prom")
    assert connection.posts == ["tokenreviews", "subjectaccessreviews"]
    now[0] += reviews.TTL_S + 1
    await judge.review("t-prom")
    assert connection.posts.count("tokenreviews") == 2


async def test_cache_is_keyed_by_the_tokens_hash_and_bounded() -> None:
    """Kept verdicts hold the token's SHA-256, never the token; at most MAX_KEPT of them."""
    connection = FakeConnection({}, allowed=set())
    judge = reviewer(connection)
    for index in range(reviews.MAX_KEPT + 5):
        await judge.review(f"token-{index}")
    kept = judge._kept
    assert len(kept) == reviews.MAX_KEPT
    last = f"token-{reviews.MAX_KEPT + 4}"
    assert hashlib.sha256(last.encode()).hexdigest() in kept
    assert not any(key.startswith("token-") for key in kept)


async def test_api_error_is_not_kept() -> None:
    """An API server that cannot answer gives no verdict, and the next scrape asks again."""
    connection = FakeConnection({"t-prom": "prom"}, allowed={"prom"})
    judge = reviewer(connection)
    connection.fail = True
    with pytest.raises(ApiError):
        await judge.review("t-prom")
    connection.fail = False
    assert await judge.review("t-prom") == (reviews.Verdict.ALLOWED, "prom")
