"""The prime-order group of ECDH-PSI: Curve25519's main subgroup, operations from libsodium (PyNaCl).

``hash_to_group`` follows the random-oracle construction of RFC 9380 on the Edwards form (two
Elligator 2 maps of independent hash halves, added; libsodium's ``from_uniform`` lands on the
main subgroup) and then takes the point's Montgomery u-coordinate (libsodium's birational map,
which also checks subgroup membership). ``Masker`` multiplies u-coordinates by a secret scalar
with X25519 (the constant-time Montgomery ladder, three times faster here than Edwards scalar
multiplication). X25519 clamps the scalar to a multiple of the cofactor, so a received value
with a small-order component (an honest peer never sends one) cannot reveal bits of the secret,
and Curve25519's twist security covers values that are not on the curve; libsodium refuses
results of low order. The map x -> [k]x commutes between the parties' secrets, which is all the
protocol needs; u-coordinates identify points up to sign, a collision between two ids' hashes
being as unlikely as a hash collision.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable, List

from nacl import bindings as _sodium
from nacl.exceptions import RuntimeError as _SodiumError

POINT_BYTES = 32
_DOMAIN = b"msfl-psi-h2g-v1"  # personalisation of the hash (16 bytes max)


class InvalidPointError(ValueError):
    """The peer sent bytes that are not a usable group element."""


def hash_to_group(ids: Iterable[str]) -> List[bytes]:
    """Each id mapped to a group element (u-coordinate); both parties must use the same function."""
    from_uniform, add = _sodium.crypto_core_ed25519_from_uniform, _sodium.crypto_core_ed25519_add
    to_montgomery = _sodium.crypto_sign_ed25519_pk_to_curve25519
    points = []
    for ident in ids:
        digest = hashlib.blake2b(ident.encode("utf-8"), digest_size=64, person=_DOMAIN).digest()
        points.append(to_montgomery(add(from_uniform(digest[:32]), from_uniform(digest[32:]))))
    return points


class Masker:
    """Multiplication by this party's secret scalar (fresh for every join, never leaves the process)."""

    def __init__(self) -> None:
        self._scalar = os.urandom(32)

    def mask(self, points: Iterable[bytes]) -> bytes:
        """The points times the secret, concatenated (``POINT_BYTES`` each)."""
        mult = _sodium.crypto_scalarmult
        scalar = self._scalar
        try:
            return b"".join([mult(scalar, point) for point in points])
        except _SodiumError:
            raise InvalidPointError("a received value is not a valid group element") from None


def split_points(buffer: bytes) -> List[bytes]:
    if len(buffer) % POINT_BYTES:
        raise InvalidPointError(f"{len(buffer)} bytes is not a whole number of {POINT_BYTES}-byte points")
    return [buffer[i:i + POINT_BYTES] for i in range(0, len(buffer), POINT_BYTES)]
