"""Codec throughput: encode+decode of activation dicts vs a plain copy and base64.

Run: .venv/bin/python benchmarks/bench_codec.py [--mib 16] [--repeats 15]

The plain copy (``tobytes`` + ``frombuffer``) is the ceiling for any byte-level codec; base64 is
what the original implementation sent. Figures are medians over repeats, measured in one run.
"""
import argparse
import base64

import mindspore_federated  # noqa: F401  (native protobuf backend before mindspore)
import mindspore as ms
import numpy as np

from mindspore_federated.communication import codec
from _timing import median_seconds  # benchmarks/ is on sys.path when run as a script


def _activation_dict(mib: int, dtype) -> dict:
    """An embedding activation plus a mask, shaped like a PanGu step ([B, S, H])."""
    itemsize = np.dtype(dtype).itemsize
    hidden = 1024
    rows = mib * 1024 * 1024 // (itemsize * hidden)
    rng = np.random.default_rng(0)
    return {"embedding_table": ms.Tensor(rng.standard_normal((rows // 512, 512, hidden)).astype(dtype)),
            "attention_mask": ms.Tensor(np.ones((1, 512, 512), np.float16))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16, help="size of the activation tensor")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    print("| payload | plain copy MiB/s | dumps+loads MiB/s | ratio | transport path MiB/s | ratio "
          "| base64 MiB/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype in (np.float32, np.float16):
        tensors = _activation_dict(args.mib, dtype)
        arrays = [t.asnumpy() for t in tensors.values()]
        mib = sum(a.nbytes for a in arrays) / 2**20

        def plain():
            return [np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape) for a in arrays]

        def round_trip():  # public API: bytes out, bytes in (decode copies into fresh tensors)
            return codec.loads(codec.dumps(tensors))

        def transport_path():  # what the communicator does: stream views, one receive buffer
            segments = codec.dumps_segments(tensors)
            buffer = np.empty(sum(memoryview(s).nbytes for s in segments), np.uint8)
            pos = 0
            for seg in segments:
                view = np.frombuffer(seg, np.uint8)
                buffer[pos:pos + view.size] = view
                pos += view.size
            return codec.loads(buffer)

        def b64():
            return [np.frombuffer(base64.b64decode(base64.b64encode(a.tobytes())), a.dtype) for a in arrays]

        t_plain = median_seconds(plain, args.repeats)
        t_codec = median_seconds(round_trip, args.repeats)
        t_path = median_seconds(transport_path, args.repeats)
        t_b64 = median_seconds(b64, max(3, args.repeats // 3))
        print(f"| {mib:.0f} MiB {np.dtype(dtype).name} | {mib / t_plain:,.0f} "
              f"| {mib / t_codec:,.0f} | {t_plain / t_codec:.2f} | {mib / t_path:,.0f} | {t_plain / t_path:.2f} "
              f"| {mib / t_b64:,.0f} | {t_plain / t_b64:.2f} |")


if __name__ == "__main__":
    main()
