"""A self-signed serving certificate for /metrics when none is mounted, made with no library.

The image carries no `cryptography` (pyproject.toml: only the local control plane uses it),
and Python's `ssl` serves a certificate but cannot make one. So this makes an RSA-2048 key
(probable primes by Miller-Rabin, `secrets` for every random number) and a version 3 X.509
certificate signed with it (sha256WithRSAEncryption, PKCS #1 v1.5), DER-encoded by hand.
OpenSSL, through `ssl`, then does all the TLS. A scraper of such an endpoint either skips
verification or is given a certificate to pin; a mounted certificate (a TLS Secret,
cert-manager) is the way to verify by a CA.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

E = 65537
BITS = 2048
_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, math.isqrt(p) + 1))]
_SMALL_PRODUCT = math.prod(_SMALL_PRIMES)  # one gcd sieves a candidate by all of them
# Rounds of Miller-Rabin for random 1024-bit candidates: FIPS 186-5 (table B.1) asks 5 for
# an error below 2**-100 when making the primes of a 2048-bit RSA key.
MR_ROUNDS = 5

_RSA = "1.2.840.113549.1.1.1"
_SHA256_RSA = "1.2.840.113549.1.1.11"
_SHA256 = "2.16.840.1.101.3.4.2.1"
_COMMON_NAME = "2.5.4.3"
_KEY_USAGE = "2.5.29.15"
_SUBJECT_ALT_NAME = "2.5.29.17"
_BASIC_CONSTRAINTS = "2.5.29.19"
_EXT_KEY_USAGE = "2.5.29.37"
_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"


@dataclass(frozen=True, slots=True)
class Key:
    n: int
    d: int
    p: int
    q: int

    @property
    def size(self) -> int:
        return (self.n.bit_length() + 7) // 8


def _is_probable_prime(n: int, rounds: int = MR_ROUNDS) -> bool:
    if math.gcd(n, _SMALL_PRODUCT) != 1:
        return n in _SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(2 + secrets.randbelow(n - 3), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int) -> int:
    while True:
        # The top two bits set: the product of two has exactly twice the bits.
        candidate = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if (candidate - 1) % E and _is_probable_prime(candidate):
            return candidate


def new_key(bits: int = BITS) -> Key:
    while True:
        p, q = _prime(bits // 2), _prime(bits // 2)
        if p != q:
            break
    d = pow(E, -1, math.lcm(p - 1, q - 1))
    return Key(n=p * q, d=d, p=p, q=q)


# -- DER --------------------------------------------------------------------------------


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=False))


def _seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytearray([40 * first + second])
    for number in rest:
        chunk = [number & 0x7F]
        while number > 0x7F:
            number >>= 7
            chunk.append(0x80 | (number & 0x7F))
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _algorithm(dotted: str) -> bytes:
    return _seq(_oid(dotted), b"\x05\x00")


def _bits(body: bytes) -> bytes:
    return _der(0x03, b"\x00" + body)


def _name(common_name: str) -> bytes:
    return _seq(_der(0x31, _seq(_oid(_COMMON_NAME), _der(0x0C, common_name.encode()))))


def _time(moment: datetime) -> bytes:
    return _der(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())


def _extension(dotted: str, value: bytes, *, critical: bool = False) -> bytes:
    flag = _der(0x01, b"\xff") if critical else b""
    return _seq(_oid(dotted), flag, _der(0x04, value))


def _alt_names(hosts: list[str]) -> bytes:
    names = []
    for host in hosts:
        try:
            names.append(_der(0x87, ipaddress.ip_address(host).packed))
        except ValueError:
            names.append(_der(0x82, host.encode("ascii")))
    return _seq(*names)


def _sign(key: Key, message: bytes) -> bytes:
    digest = _seq(_algorithm(_SHA256), _der(0x04, hashlib.sha256(message).digest()))
    padded = b"\x00\x01" + b"\xff" * (key.size - len(digest) - 3) + b"\x00" + digest
    return pow(int.from_bytes(padded, "big"), key.d, key.n).to_bytes(key.size, "big")


def certificate(key: Key, *, common_name: str, hosts: list[str], now: datetime) -> bytes:
    """A self-signed server certificate (DER) for these DNS names and IP addresses."""
    public = _seq(_algorithm(_RSA), _bits(_seq(_int(key.n), _int(E))))
    extensions = _seq(
        _extension(_BASIC_CONSTRAINTS, _seq(), critical=True),
        _extension(_KEY_USAGE, _der(0x03, b"\x05\xa0"), critical=True),  # signature, keyEnc.
        _extension(_EXT_KEY_USAGE, _seq(_oid(_SERVER_AUTH))),
        _extension(_SUBJECT_ALT_NAME, _alt_names(hosts)),
    )
    tbs = _seq(
        _der(0xA0, _int(2)),  # version 3
        _int(secrets.randbits(127) + 1),
        _algorithm(_SHA256_RSA),
        _name(common_name),
        _seq(_time(now - timedelta(hours=1)), _time(now + timedelta(days=365))),
        _name(common_name),
        public,
        _der(0xA3, extensions),
    )
    return _seq(tbs, _algorithm(_SHA256_RSA), _bits(_sign(key, tbs)))


def private_key(key: Key) -> bytes:
    """The key as PKCS #1 RSAPrivateKey (DER)."""
    p, q, d = key.p, key.q, key.d
    parts = (0, key.n, E, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p))
    return _seq(*(_int(part) for part in parts))


def pem(label: str, der: bytes) -> str:
    body = base64.b64encode(der).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])
