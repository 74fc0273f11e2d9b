"""``python -m kpid_core trial``: one prune + inner-distill trial from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from kpid_core.errors import ConfigError, KPIDError, NonFiniteLossError

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_NONFINITE", "add_parser", "run"]

EXIT_ERROR = 2  # bad input: config, data, files
EXIT_NONFINITE = 3  # training diverged (NaN/Inf loss)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), the shell's 128 + 2, as sweeps/run.py

_EPILOG = """\
Without --config the bundled digits task runs (scikit-learn's digits, offline; about a minute on
2 CPU cores). Keys: seed, data.*, model.*, teacher.*, prune.*, distill.*, train.*, latency.* (see
kpid_core/configs/trial.yaml); aliases: budget, metric, epochs, lr, kd_weight, inner_weight/gamma,
temperature, match, dataset, model, allocation, cost, round_to. prune.cost=latency
budgets a latency table measured per latency.* (device, batch, threads), cached on disk; with
latency.measure=on (auto: when prune.cost=latency) the trial also times its dense and pruned model.

Writes into --out (which must not exist or be empty): metrics.json, model/ (reload with
kpid_core.load_pruned), trial.log.

Exit codes: 0 finished; 2 bad input (one line "error: ..."); 3 the loss became NaN/Inf (status
"non_finite_loss" in metrics.json; lower the learning rate); 130 interrupted (Ctrl-C; an --out this
run created is removed, so the same command can be run again).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``trial`` subcommand."""
    p = subparsers.add_parser("trial", help="run one prune + inner-distill trial",
                              description="Run one KPID trial: teacher -> importance -> knapsack prune -> "
                                          "fine-tune with CE + logits KD + inner KD -> test accuracy.",
                              epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="trial YAML (default: the bundled digits config)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. --set budget=0.3 --set train.lr=0.1 (repeatable)")
    p.add_argument("--out", metavar="DIR", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines on stderr")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the trial; print the final metrics as JSON on stdout. Returns the exit code."""
    from kpid_core.config import load_config

    out = Path(args.out)
    created = not out.exists()
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"--out {str(out)!r} exists and is not empty; refusing to overwrite it")
        cfg = load_config(args.config, args.overrides)
        from kpid_core.files import output_dir, storage_errors
        from kpid_core.trial import run_trial

        output_dir(out, "--out")

        handler = None
        if not getattr(args, "quiet", False):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logging.getLogger("kpid_core").addHandler(handler)
        try:
            with storage_errors("--out", out):
                metrics = run_trial(cfg, out_dir=out)
        finally:
            if handler is not None:
                logging.getLogger("kpid_core").removeHandler(handler)
    except NonFiniteLossError as exc:
        print(f"status: non_finite_loss: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    except (KPIDError, KeyboardInterrupt) as exc:
        if created and out.is_dir():  # bad input or Ctrl-C leaves nothing behind (a retry is not refused as non-empty)
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(exc, KPIDError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        removed = f"; removed the partial --out {str(out)!r}, so the same command can be re-run" if created else ""
        print(f"interrupted: the trial stopped before it finished{removed}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps({k: v for k, v in metrics.items() if k != "config"}))
    return 0
