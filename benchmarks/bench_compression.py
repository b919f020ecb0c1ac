"""Compression throughput: codec encode/decode MiB/s per scheme next to the uncompressed codec.

Run: .venv/bin/python benchmarks/bench_compression.py [--mib 16] [--repeats 9]

One float32 activation of --mib MiB (shaped [B, S, H] like a PanGu step) is sent through
``codec.dumps`` / ``codec.loads`` with each scheme; MiB/s are of the ORIGINAL tensor size, so rows
compare directly with the uncompressed row measured in the same run. ``bit_pack 1`` runs on the
EmbeddingDP output of the same activation (0/1 floats), the case it is meant for. The last columns
time the pure-numpy packing alone (pack_bits / unpack_bits) on the codes of the same tensor.
Decoding an uncompressed tensor is a zero-copy view of the received buffer, hence its huge figure;
the 2 CPU cores are shared, so expect +-30 % between runs.
"""
import argparse

import mindspore_federated  # noqa: F401  (native protobuf backend before mindspore)
import numpy as np

from mindspore_federated import CompressConfig
from mindspore_federated.communication import codec, compression
from mindspore_federated.privacy import EmbeddingDP
from _timing import median_seconds  # benchmarks/ is on sys.path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16, help="size of the float32 activation")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    hidden, seq = 1024, 512
    rows = args.mib * 2 ** 20 // (4 * hidden * seq)
    acts = np.random.default_rng(0).standard_normal((rows, seq, hidden)).astype(np.float32)
    dp_bits = EmbeddingDP(1.0, seed=0)(acts)
    mib = acts.nbytes / 2 ** 20

    cases = [("none", acts, None), ("fp16", acts, CompressConfig("fp16")),
             ("bf16", acts, CompressConfig("bf16"))]
    cases += [(f"min_max {b}", acts, CompressConfig("min_max", b)) for b in (8, 6, 4, 1)]
    cases += [("bit_pack 1 (EmbeddingDP output)", dp_bits, CompressConfig("bit_pack", 1))]

    print(f"{mib:.0f} MiB float32 activation {list(acts.shape)}, median of {args.repeats}")
    print("| scheme | wire bytes / raw | encode MiB/s | decode MiB/s | pack_bits MiB/s "
          "| unpack_bits MiB/s |")
    print("|---|---|---|---|---|---|")
    for label, array, config in cases:
        configs = {"x": config} if config else None
        data = codec.dumps({"x": array}, compress_configs=configs)
        t_enc = median_seconds(lambda: codec.dumps({"x": array}, compress_configs=configs), args.repeats)
        t_dec = median_seconds(lambda: codec.loads(data, as_numpy=True), args.repeats)
        pack = unpack = "-"
        if config is not None and config.compress_type in ("min_max", "bit_pack"):
            bits = config.bit_num
            codes = np.random.default_rng(1).integers(0, 1 << bits, array.size, dtype=np.uint8)
            buf = compression.pack_bits(codes, bits)
            t_pack = median_seconds(lambda: compression.pack_bits(codes, bits), args.repeats)
            t_unpack = median_seconds(lambda: compression.unpack_bits(buf, bits, codes.size), args.repeats)
            pack, unpack = f"{mib / t_pack:,.0f}", f"{mib / t_unpack:,.0f}"
        print(f"| {label} | {len(data) / array.nbytes:.4f} | {mib / t_enc:,.0f} | {mib / t_dec:,.0f} "
              f"| {pack} | {unpack} |")


if __name__ == "__main__":
    main()
