"""Plot loss curves from the trainers' --loss_log files (json list or csv of {step, loss, ...}).

    python plot_loss.py output/split_loss.json output/central_loss.json -o output/loss.png
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple


def read_losses(path: str) -> Tuple[List[int], List[float]]:
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    rows = sorted(rows, key=lambda r: int(float(r["step"])))
    return [int(float(r["step"])) for r in rows], [float(r["loss"]) for r in rows]


def plot_curves(curves: Mapping[str, str], out: str, title: str = "") -> str:
    """One line per {label: loss log path}; the later curves dashed so identical ones stay visible."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    styles = [dict(color="tab:blue", linewidth=2.2), dict(color="tab:red", linewidth=1.2, linestyle="--")]
    for i, (label, path) in enumerate(curves.items()):
        steps, losses = read_losses(path)
        ax.plot(steps, losses, label=label, **styles[i % len(styles)])
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="loss logs; label = file name")
    parser.add_argument("-o", "--out", default="loss.png")
    args = parser.parse_args(argv)
    curves: Dict[str, str] = {os.path.splitext(os.path.basename(p))[0]: p for p in args.logs}
    print(plot_curves(curves, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
