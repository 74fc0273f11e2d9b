"""Start-up cost of a trial process: what ``kpid_core`` imports before it trains on digits.

Every trial of a sweep runs in a fresh Ray worker, so its imports are paid once per trial (and per
CLI call, per DDP rank). Since stop 23 ``kpid_core.models`` reads torchvision's classifiers on first
need and the digits loader reads scikit-learn's data file without importing scikit-learn. This bench
times, in fresh interpreters and alternating rounds (the anchor in the same run):

- ``product``: import the model registry and the data module, build ``digits_resnet``, load digits
  (what a digits trial does before training);
- ``eager``: the same, plus what the code did before: read torchvision's registry (``MODEL_NAMES``)
  and load digits through ``sklearn.datasets.load_digits``.

Reports the median wall time of each, and the paired per-round difference (eager − product) with its
spread. Usage: ``python bench/startup.py [--rounds 9] [--md FILE]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._header import command_line, header_lines

__all__ = ["SNIPPETS", "main", "summarise"]

_PRODUCT = ("import kpid_core.models as m\n"
            "from kpid_core.training.data import digits_arrays\n"
            "m.build_model('digits_resnet', num_classes=10)\n"
            "digits_arrays()\n")
#: The two start-ups timed: the product's, and the same with the imports the code made before.
SNIPPETS = {
    "product": _PRODUCT,
    "eager": _PRODUCT + "m.MODEL_NAMES\nfrom sklearn.datasets import load_digits\nload_digits()\n",
}


def _time_once(code: str) -> float:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    return time.perf_counter() - t0


def _quartiles(v: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return q[0], q[2]


def summarise(samples: dict[str, list[float]]) -> list[str]:
    """Markdown lines: median seconds of each start-up, the paired difference and the ratio.

    Args:
        samples: seconds per round of ``product`` and ``eager`` (same length, paired by round).

    Returns:
        The table and one line on the difference.
    """
    prod, eager = samples["product"], samples["eager"]
    diff = [e - p for e, p in zip(eager, prod)]
    lo, hi = _quartiles(diff)
    out = ["| start-up | median s | min–max s |", "|---|---|---|"]
    for name, v in samples.items():
        out.append(f"| {name} | {statistics.median(v):.2f} | {min(v):.2f}–{max(v):.2f} |")
    out.append("")
    out.append(f"- eager − product, paired by round: median {statistics.median(diff):+.2f} s (IQR {lo:+.2f} to "
               f"{hi:+.2f} s, {len(diff)} rounds); product ÷ eager {statistics.median(prod) / statistics.median(eager):.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", default="9", help="alternating rounds of both start-ups (default 9)")
    ap.add_argument("--md", default=None, help="also write the markdown to this file")
    args = ap.parse_args(argv)
    try:
        rounds = int(args.rounds)
    except ValueError:
        rounds = 0
    if rounds < 1:
        print(f"error: --rounds {args.rounds!r}: must be a whole number >= 1", file=sys.stderr)
        return 2
    samples: dict[str, list[float]] = {name: [] for name in SNIPPETS}
    for k in range(rounds):
        order = list(SNIPPETS) if k % 2 == 0 else list(SNIPPETS)[::-1]  # alternate which goes first
        for name in order:
            samples[name].append(_time_once(SNIPPETS[name]))
        print(f"round {k + 1}/{rounds}: " + ", ".join(f"{n} {samples[n][-1]:.2f} s" for n in SNIPPETS),
              file=sys.stderr, flush=True)
    lines = summarise(samples)
    print("\n".join(lines))
    if args.md:
        cmd = command_line("bench/startup.py", list(argv if argv is not None else sys.argv[1:]))
        head = header_lines("Start-up of a digits trial process: product vs the eager imports of before", cmd,
                            notes=["Wall seconds of a fresh interpreter per start-up, alternating rounds."])
        with open(args.md, "w") as f:
            f.write("\n".join(head) + "\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
