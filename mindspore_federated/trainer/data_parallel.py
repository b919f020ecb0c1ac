"""One party as a data-parallel job on MindSpore's distributed runtime (``msrun``).

The peer keeps talking to ONE process: rank 0. Rank 0 receives every message and relays it to
the other ranks through MindSpore's collective communication (``RootRelayChannel``), so all
ranks run the same code path on the same messages. Each rank computes on its slice of the
peer's batch (``RankGroup.shard``); FLModel built under ``ParallelMode.DATA_PARALLEL`` sums the
parameter gradients over the ranks (``DistributedGradReducer``; ``gradients_mean=False``: the
peer's sensitivities already carry the full batch's normalisation, so the batch's gradient is
the sum of the slices' gradients); the slices' outputs and input gradients are gathered back
(``RankGroup.gather``) and rank 0 sends them. Why rank 0 only: the peer needs no change (one
address, one certificate, the same five messages), and the relay between ranks is a local
collective, far cheaper than a second TLS connection per rank.

Every rank must call the collective methods in the same order (they are collectives).
"""
import logging
import os
import sys
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import ops, Tensor

logger = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES = 1 << 34  # 16 GiB: a relayed length beyond this is a corrupted header


def launched_by_msrun() -> bool:
    """Whether ``msrun`` started this process, as a worker or as its scheduler (it exports
    MS_ROLE and MS_WORKER_NUM); either must build a RankGroup before anything else."""
    return os.environ.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED") and "MS_WORKER_NUM" in os.environ


class RankGroup:
    """This process's place in the job, and the collectives the split parties need.

    Initialises MindSpore communication (once) and sets DATA_PARALLEL with summed gradients,
    which FLModels built afterwards pick up. Build it first thing in the program: msrun also
    runs the program as its scheduler, whose ``init()`` serves the job until every worker has
    left; that process then exits here, before doing any of the workers' work (running on,
    it crashed at exit). Workers leave the job by exiting: an explicit
    ``mindspore.communication.release()`` crashes a CPU worker in MindSpore 2.10.
    """

    def __init__(self) -> None:
        from mindspore import communication  # pylint: disable=import-outside-toplevel
        if not communication.GlobalComm.INITED:
            communication.init()
        if os.environ.get("MS_ROLE") == "MS_SCHED":
            logger.info("msrun scheduler: all workers have left, exiting")
            sys.exit(0)
        self.rank: int = communication.get_rank()
        self.size: int = communication.get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                     gradients_mean=False)
        self._gather = ops.AllGather()
        self._bcast = ops.Broadcast(0)
        logger.info("rank %d of %d: data parallel over the peer's batch, gradients summed",
                    self.rank, self.size)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ slices
    def shard(self, value: Any, what: str = "tensor") -> Tensor:
        """This rank's contiguous slice along axis 0 (the batch)."""
        tensor = value if isinstance(value, Tensor) else Tensor(np.asarray(value))
        if tensor.ndim == 0 or tensor.shape[0] % self.size:
            raise ValueError(f"{what}: batch dimension {tuple(tensor.shape)[:1] or 'none'} cannot be "
                             f"split evenly over {self.size} ranks (shape {tuple(tensor.shape)}; use a "
                             f"batch size divisible by the number of workers)")
        step = tensor.shape[0] // self.size
        return tensor[self.rank * step:(self.rank + 1) * step]

    def gather(self, value: Tensor) -> Tensor:
        """The slices of all ranks, concatenated along axis 0 in rank order."""
        if self.size == 1:
            return value
        return self._gather(value)

    def shard_dict(self, tensors: Mapping[str, Any]) -> Dict[str, Any]:
        """``shard`` over a (nested) dict of batch tensors."""
        return {k: self.shard_dict(v) if isinstance(v, Mapping) else self.shard(v, k)
                for k, v in tensors.items()}

    def gather_dict(self, tensors: Mapping[str, Any]) -> Dict[str, Any]:
        """``gather`` over a (nested) dict of tensors."""
        return {k: self.gather_dict(v) if isinstance(v, Mapping) else self.gather(v)
                for k, v in tensors.items()}

    def shard_message(self, raw: Mapping[str, Any]) -> Dict[str, Any]:
        """A message with every tensor but its ``meta`` header replaced by this rank's slice."""
        return {k: v if k == "meta" else (self.shard_dict(v) if isinstance(v, Mapping) else self.shard(v, k))
                for k, v in raw.items()}

    # -------------------------------------------------------------- broadcast
    def broadcast_bytes(self, data: Optional[bytes]) -> bytes:
        """Rank 0's bytes on every rank (others pass None). The bytes travel bit for bit,
        viewed as float32 (the dtype MindSpore's CPU collectives carry)."""
        length = np.zeros(1, np.int64)
        if self.is_root:
            length[0] = len(data)
        length = self._bcast((Tensor(length.view(np.float32)),))[0].asnumpy().view(np.int64)
        size = int(length[0])
        if not 0 <= size <= _MAX_MESSAGE_BYTES:
            raise RuntimeError(f"rank {self.rank}: relayed message length {size} is invalid")
        words = (size + 3) // 4
        buf = np.zeros(words * 4, np.uint8)
        if self.is_root:
            buf[:size] = np.frombuffer(data, np.uint8)
        if words == 0:
            return b""
        out = self._bcast((Tensor(buf.view(np.float32)),))[0].asnumpy()
        return out.view(np.uint8)[:size].tobytes()

    def broadcast_message(self, msg: Optional[Mapping]) -> Dict:
        """Rank 0's (nested) dict of tensors on every rank, through the tensor codec."""
        from mindspore_federated.communication import codec  # pylint: disable=import-outside-toplevel
        data = codec.dumps(msg) if self.is_root else None
        return codec.loads(self.broadcast_bytes(data))


class DataParallelHandler:
    """A follower's message handler (``forward``/``backward``/``apply``/``evaluate`` over received
    messages, e.g. the protocol's ``FLModelFollower``) run on this rank's slice of every message;
    the replies are the gathered full-batch tensors, the same on every rank. The gradient
    statistics come from the all-reduced gradients, so they are the same on every rank too."""

    def __init__(self, handler: Any, group: RankGroup) -> None:
        self.handler = handler
        self.group = group

    def _slice(self, msg: Any) -> Any:
        return type(msg)(self.group.shard_message(msg.raw), msg.sender)

    def forward(self, msg: Any) -> Dict[str, Any]:
        return self.group.gather_dict(self.handler.forward(self._slice(msg)))

    def backward(self, msg: Any) -> Tuple[Dict[str, Any], Any]:
        grads, stats = self.handler.backward(self._slice(msg))
        return self.group.gather_dict(grads), stats

    def apply(self, decision: Any) -> None:
        self.handler.apply(decision)

    def evaluate(self, msg: Any) -> Dict[str, Any]:
        return self.group.gather_dict(self.handler.evaluate(self._slice(msg)))


class RootRelayChannel:
    """The channel to the peer as every rank sees it: rank 0 talks to the peer, the other ranks
    get each received message relayed; sends happen on rank 0 only (all ranks hold the same
    tensors to send, gathered). Wraps any channel with ``send``/``recv``/``try_send``/``close``
    (``channel`` is None on the other ranks)."""

    def __init__(self, channel: Any, group: RankGroup) -> None:
        if group.is_root and channel is None:
            raise ValueError("RootRelayChannel: rank 0 needs the channel to the peer")
        self.channel = channel
        self.group = group
        self.messages_sent = 0
        self.where = getattr(channel, "where", "the peer (through rank 0)")

    @property
    def bytes_sent(self) -> int:
        return getattr(self.channel, "bytes_sent", 0) if self.group.is_root else 0

    def recv(self, timeout: Optional[float] = None) -> Dict:
        msg = self.channel.recv(timeout) if self.group.is_root else None
        return self.group.broadcast_message(msg)

    def send(self, msg: Mapping) -> None:
        if self.group.is_root:
            self.channel.send(msg)
        self.messages_sent += 1

    def try_send(self, msg: Mapping, timeout: float = 5.0) -> None:
        if self.group.is_root:
            self.channel.try_send(msg, timeout)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


__all__ = ["RankGroup", "RootRelayChannel", "DataParallelHandler", "launched_by_msrun"]
