"""ECDH private set intersection, bucket by bucket (semi-honest security; see docs/data_join.md).

With H a hash onto a prime-order group and a, b the parties' secret scalars, each party sends
its ids as H(x)^a, raises the peer's values to its own secret and sends them back. Both then hold
H(.)^(ab) for both sets: equal values mark the shared ids. Everything crossing is a group element
or a count; ids never leave the party.
"""
from __future__ import annotations

import hashlib
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence

from mindspore_federated.data_join._channel import DataJoinPeerError, PeerChannel
from mindspore_federated.data_join._group import POINT_BYTES, InvalidPointError, Masker, hash_to_group, split_points

logger = logging.getLogger(__name__)


def bucket_index(ident: str, bucket_num: int) -> int:
    """Stable across processes, machines and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(ident.encode("utf-8"), digest_size=8, person=b"msfl-bucket-v1").digest()
    return int.from_bytes(digest, "little") % bucket_num


def split_into_buckets(ids, bucket_num: int) -> List[List[str]]:
    buckets: List[List[str]] = [[] for _ in range(bucket_num)]
    for ident in ids:
        buckets[bucket_index(ident, bucket_num)].append(ident)
    return buckets


class EmptyIntersectionError(ValueError):
    """The parties share no id."""


def expected_messages(bucket_num: int):
    return [(kind, bucket) for bucket in range(bucket_num) for kind in ("own", "dbl")] + [("digest", None)]


def intersect(channel: PeerChannel, buckets: Sequence[List[str]], thread_num: int, peer: str) -> List[List[str]]:
    """Per bucket, this party's ids that the peer holds too, in an order both parties share."""
    masker = Masker()
    count = len(buckets)
    # Our values go out in a secret random order: matching them, the peer must not learn where its
    # ids sit in our table (e.g. sorted by sign-up date).
    shuffle = random.SystemRandom().shuffle
    buckets = [list(ids) for ids in buckets]
    for ids in buckets:
        shuffle(ids)
    own_masked: Dict[int, bytes] = {}

    def mask_own(bucket: int) -> None:
        own_masked[bucket] = masker.mask(hash_to_group(buckets[bucket]))
        channel.send("own", bucket, own_masked[bucket], count=len(buckets[bucket]))
        logger.info("data join: bucket %d/%d: sent %d masked ids", bucket + 1, count, len(buckets[bucket]))

    def answer_peer(bucket: int) -> bytes:
        header, payload = channel.get("own", bucket)
        announced = header.get("count")
        if not isinstance(announced, int) or announced < 0 or len(payload) != announced * POINT_BYTES:
            raise DataJoinPeerError(f"peer '{peer}': bucket {bucket}: {len(payload)} bytes do not hold "
                                    f"{announced!r} points")
        try:
            double = masker.mask(split_points(payload))
        except InvalidPointError as err:
            raise DataJoinPeerError(f"peer '{peer}': bucket {bucket}: {err}") from None
        channel.send("dbl", bucket, double)
        return double

    def match(bucket: int, peer_double: bytes) -> List[str]:
        _, own_double = channel.get("dbl", bucket)
        if len(own_double) != len(buckets[bucket]) * POINT_BYTES:
            raise DataJoinPeerError(f"peer '{peer}': bucket {bucket}: got {len(own_double) // POINT_BYTES} "
                                    f"re-masked ids back for the {len(buckets[bucket])} sent")
        shared = set(split_points(peer_double))
        pairs = sorted((value, ident) for value, ident in zip(split_points(own_double), buckets[bucket])
                       if value in shared)
        digests[bucket] = hashlib.sha256(b"".join(value for value, _ in pairs)).hexdigest()
        logger.info("data join: bucket %d/%d: %d ids in common", bucket + 1, count, len(pairs))
        return [ident for _, ident in pairs]

    digests: Dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=thread_num, thread_name_prefix="psi") as pool:
        list(pool.map(mask_own, range(count)))
        peer_doubles = list(pool.map(answer_peer, range(count)))
        result = list(pool.map(match, range(count), peer_doubles))
    # Both sides must have found the same sets in the same order (they hold the same values).
    mine = hashlib.sha256("".join(digests[b] for b in range(count)).encode()).hexdigest()
    channel.send("digest", None, digest=mine, total=sum(map(len, result)))
    header, _ = channel.get("digest")
    if header.get("digest") != mine:
        raise DataJoinPeerError(f"peer '{peer}' computed a different intersection ({header.get('total')} ids, "
                                f"here {sum(map(len, result))}); the parties must use the same bucket_num")
    return result
