"""Command line: ``python -m kpid_core {macs,prune,...}``.

Other modules add subcommands: after the engine's own subparsers are built, ``kpid_core.trial_cli``
gets ``add_parser(subparsers)`` and runs its commands with ``run(args) -> int``.
Every :class:`~kpid_core.errors.KPIDError` ends as one line ``error: <message>`` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["build_parser", "main"]


def _shape(args) -> tuple[int, int, int]:
    return (3, args.input, args.input)


def _build(args):
    from kpid_core.models import build_model

    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    return build_model(args.model, **kwargs), kwargs


def _cmd_macs(args) -> int:
    from kpid_core.engine.macs import count_params, format_count, macs_breakdown

    model, _ = _build(args)
    with _input_errors(args):  # counting is the model's one forward: its failure is about --input
        rows = macs_breakdown(model, _shape(args))
    total, params = sum(r.macs for r in rows), count_params(model)
    if args.json:
        out = {"model": args.model, "input_shape": list(_shape(args)), "macs": total, "params": params}
        if args.breakdown:
            out["layers"] = [r.to_dict() for r in rows]
        print(json.dumps(out))
        return 0
    if args.breakdown:
        print(f"{'layer':<40} {'type':<8} {'in':>6} {'out':>6} {'groups':>6} {'kernel':<8} {'out HW':<10} {'MACs':>12}")
        for r in rows:
            print(f"{r.name:<40} {r.type:<8} {r.in_channels:>6} {r.out_channels:>6} {r.groups:>6} "
                  f"{'x'.join(map(str, r.kernel)) or '-':<8} {'x'.join(map(str, r.output_hw)) or '-':<10} {r.macs:>12}")
    print(f"{args.model} @ {args.input}x{args.input}: {format_count(total, 'MACs')} ({total}), "
          f"{format_count(params)} params")
    return 0


def _cmd_prune(args) -> int:
    import shutil

    from kpid_core.engine.allocation import check_fraction
    from kpid_core.engine.importance import DATA_METRICS, METRICS, get_metric
    from kpid_core.errors import ConfigError, KPIDError
    from kpid_core.files import output_dir

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {str(out)!r} exists and is not empty; refusing to overwrite it")
    check_fraction("budget", args.budget)  # bad arguments fail before any model is built
    check_fraction("min_keep", args.min_keep)
    settings = _latency_args(args)
    get_metric(args.metric)
    if args.metric in DATA_METRICS:
        raise ConfigError(f"--metric {args.metric!r} needs training data, which this command does not load; "
                          f"use a data-free metric ({', '.join(m for m in METRICS if m not in DATA_METRICS)}) "
                          f"or compute scores with kpid_core.compute_importance")
    created = not out.exists()
    output_dir(out, "--out")  # an uncreatable or read-only --out fails before the model is built
    try:
        return _prune(args, out, settings)
    except (KPIDError, KeyboardInterrupt):
        if created:  # bad input or Ctrl-C leaves nothing behind (the same command can be run again)
            shutil.rmtree(out, ignore_errors=True)
        raise


def _prune(args, out: Path, settings) -> int:
    import torch

    from kpid_core.engine.importance import compute_importance
    from kpid_core.engine.macs import format_count
    from kpid_core.files import storage_errors
    from kpid_core.prune import prune_to_budget, save_pruned

    model, kwargs = _build(args)
    _check_runs(model, args)  # one forward before importance and pruning, so --input fails fast
    if args.checkpoint:
        from kpid_core.training.teacher import load_state_dict_file

        load_state_dict_file(args.checkpoint, model, what=f"--checkpoint (model {args.model})")
    x = torch.zeros(1, *_shape(args))
    scores = compute_importance(model, x, args.metric, seed=args.seed)
    res = prune_to_budget(model, x, args.budget, scores, min_keep=args.min_keep, allocation=args.allocation,
                          model_name=args.model, model_kwargs=kwargs, cost=args.cost, round_to=args.round_to,
                          latency=settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    with storage_errors("--out", out):
        save_pruned(res, out)
    if args.json:
        print(json.dumps({"model": args.model, "budget": res.budget, "metric": args.metric, "out": str(out),
                          "macs_before": res.macs_before, "macs_after": res.macs_after,
                          "macs_ratio": res.macs_ratio, "params_before": res.params_before,
                          "params_after": res.params_after, "cost": res.cost, "cost_before": res.cost_before,
                          "cost_after": res.cost_after, "cost_ratio": res.cost_ratio, "round_to": args.round_to,
                          "latency_measured": res.spec.get("latency_measured")}))
    else:
        print(f"{args.model} pruned to budget {res.budget:g} ({args.allocation}, metric {args.metric})")
        print(f"  MACs:   {format_count(res.macs_before)} -> {format_count(res.macs_after)} "
              f"({res.macs_ratio:.4f} of dense)")
        print(f"  params: {format_count(res.params_before)} -> {format_count(res.params_after)}")
        if res.cost == "latency":
            print(f"  modelled latency ({settings.device}, batch {settings.batch}, {settings.threads} thread(s)): "
                  f"{res.cost_before / 1e3:.2f} ms -> {res.cost_after / 1e3:.2f} ms ({res.cost_ratio:.4f} of dense)")
            if "latency_measured" in res.spec:
                print(f"  measured latency: {res.spec['latency_measured']:.4f} of dense "
                      f"({len(res.spec['latency_landing'])} measured tries)")
        print(f"  saved:  {out}/spec.json, {out}/weights.pt")
    return 0


def _latency_args(args):
    """The latency settings of ``prune --cost latency`` (validated before any model is built)."""
    from kpid_core.engine.cost import check_cost, check_round_to
    from kpid_core.engine.latency_table import LatencySettings
    from kpid_core.errors import ConfigError

    check_cost(args.cost)
    check_round_to(args.round_to)
    if args.cost != "latency":
        if args.device != "cpu" or args.batch != 8 or args.threads != 1 or args.amp:
            raise ConfigError("--device/--batch/--threads/--amp only apply with --cost latency")
        return None
    if args.amp and not args.device.startswith("cuda"):
        raise ConfigError("--amp: only with --device cuda (CPU tables are fp32)")
    return LatencySettings(device=args.device, batch=args.batch, threads=args.threads, amp=args.amp,
                           channels_last=args.amp, repeats=args.table_repeats, cache_dir=args.cache_dir,
                           land_rounds=args.land_rounds, min_sample_s=args.min_sample_s).check()


def _whole(text: str, what: str = "a whole number") -> int:
    from kpid_core.cli import whole_at_least

    return whole_at_least(text, 1, what)


def _whole_or_zero(text: str) -> int:
    from kpid_core.cli import whole_at_least

    return whole_at_least(text, 0, "a whole number >= 0")


def _model_rows(timm_pattern: str | None) -> list[dict]:
    """One row per model name: ``name``, ``source`` and ``status`` (``ok`` or why it is refused)."""
    from kpid_core import models

    rows = [{"name": n, "source": "torchvision" if n in models.TORCHVISION_MODELS else "kpid", "status": "ok"}
            for n in models.MODEL_NAMES]
    for n in models.TORCHVISION_REFUSED:
        try:
            models.check_model_name(n)
        except Exception as exc:  # noqa: BLE001 (the reason is the row's content)
            rows.append({"name": n, "source": "torchvision", "status": f"refused: {exc}"})
    if timm_pattern is not None:
        rows += [{"name": n, "source": "timm", "status": "available"} for n in models.timm_models(timm_pattern)]
    return rows


def _cmd_models(args) -> int:
    from kpid_core import models

    rows = _model_rows(args.timm)
    try:
        unmatched = args.timm is not None and not any(r["source"] == "timm" for r in rows)
        timm_note = ("timm: " + (f"no CNN matches {args.timm!r} (patterns are fnmatch-style, e.g. 'resnet*'); "
                                 if unmatched else "")
                     + f"installed; {len(models.timm_models())} CNNs as timm:NAME (list them with --timm 'PATTERN')")
    except Exception as exc:  # noqa: BLE001 (timm missing: say how to get it)
        timm_note = f"timm: {exc}"
    if args.json:
        print(json.dumps({"models": rows, "timm": timm_note}))
        return 0
    for r in rows:
        print(f"{r['name']:<28} {r['source']:<12} {r['status']}")
    print(timm_note)
    print("your own: package.module:function (called as function(num_classes=N, **kwargs)), or any nn.Module "
          "through the Python API")
    return 0


def _pixels(text: str) -> int:
    return _whole(text, "a whole number of pixels")


@contextmanager
def _input_errors(args) -> Iterator[None]:
    """A model too deep for ``--input`` pixels fails with a line naming --input, not in torch."""
    from kpid_core.errors import ConfigError

    try:
        yield
    except (RuntimeError, AssertionError) as exc:  # AssertionError: a model's own size check (timm's halo attention)
        raise ConfigError(f"--input {args.input}: model {args.model!r} cannot run on a {args.input}x{args.input} "
                          f"image ({(str(exc).splitlines() or [type(exc).__name__])[0][:160]}); use a larger --input"
                          ) from None


def _check_runs(model, args) -> None:
    import torch

    with _input_errors(args), torch.no_grad():
        model.eval()(torch.zeros(1, *_shape(args)))


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The ``python -m kpid_core`` command line: ``macs``, ``models``, ``prune`` and ``trial``.

    Returns:
        The parser and its subcommand registry (so that a caller can add its own subcommands).
    """
    from kpid_core import trial_cli
    from kpid_core.cli import ArgumentParser

    p = ArgumentParser(prog="python -m kpid_core",
                                description="KPID: knapsack channel pruning to a MAC budget.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_macs_parser(sub)
    _add_models_parser(sub)
    _add_prune_parser(sub)
    trial_cli.add_parser(sub)
    return p, sub


def _add_model_args(sp: argparse.ArgumentParser) -> None:
    """The options that name and size the model (shared by ``macs`` and ``prune``)."""
    sp.add_argument("--model", required=True,
                    help="model name: a torchvision classifier (resnet50, mobilenet_v3_large, ...), timm:NAME "
                         "(timm extra), package.module:function (your factory), or a built-in "
                         "(digits_resnet, resnet20); `python -m kpid_core models` lists them")
    sp.add_argument("--input", type=_pixels, default=224, metavar="PIXELS",
                    help="square input resolution MACs are counted at (default 224)")
    sp.add_argument("--num-classes", type=_whole, default=None, metavar="N",
                    help="classifier outputs (default: the model's own, 1000 for torchvision)")
    sp.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _add_macs_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("macs", help="count MACs (conv+linear, one image) and parameters of a model")
    _add_model_args(m)
    m.add_argument("--breakdown", action="store_true", help="also list every conv/linear layer's MACs")
    m.set_defaults(func=_cmd_macs)


def _add_models_parser(sub: argparse._SubParsersAction) -> None:
    ms = sub.add_parser("models", help="list the model names the CLI, trial configs and sweeps accept")
    ms.add_argument("--timm", nargs="?", const="*", default=None, metavar="PATTERN",
                    help="also list timm's CNNs matching a shell-style PATTERN (default: all), e.g. 'resnet*'")
    ms.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ms.set_defaults(func=_cmd_models)


def _add_prune_parser(sub: argparse._SubParsersAction) -> None:
    from kpid_core.choices import ALLOCATIONS, METRICS  # no torch to build the parser (--help, bad arguments)

    pr = sub.add_parser("prune", help="prune a model to a MAC (or params, latency) budget and save spec.json + weights.pt")
    _add_model_args(pr)
    pr.add_argument("--budget", type=float, required=True,
                    help="fraction of the dense model's cost (see --cost; MACs by default) to keep, in (0, 1]")
    pr.add_argument("--metric", required=True,
                    help=f"channel importance metric: {', '.join(METRICS)} (data-free here: l1, l2, bn_gamma, random)")
    pr.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    pr.add_argument("--checkpoint", default=None, metavar="FILE",
                    help="state dict of the dense model (torch.save file, loaded with weights_only=True)")
    pr.add_argument("--min-keep", type=float, default=0.1, metavar="F",
                    help="every channel group keeps at least this fraction (and one channel); default 0.1")
    pr.add_argument("--allocation", choices=ALLOCATIONS, default="knapsack",
                    help="knapsack (the paper) or uniform (same fraction per group; a baseline)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the random metric (default 0)")
    _add_cost_args(pr)
    pr.set_defaults(func=_cmd_prune)


def _add_cost_args(pr: argparse.ArgumentParser) -> None:
    """``prune``'s cost model options (``--cost``, ``--round-to``) and the latency table's settings."""
    from kpid_core.choices import COSTS, ROUND_TO
    from kpid_core.engine.latency_settings import LatencySettings as T  # the defaults (imports no torch)

    pr.add_argument("--cost", choices=COSTS, default="macs",
                    help="what --budget is a fraction of: macs (default), params, or latency (a per-layer "
                         "table measured on --device at --batch/--threads, cached on disk)")
    pr.add_argument("--round-to", type=int, choices=ROUND_TO, default=1, metavar="N",
                    help="keep channel counts multiples of N (1, 8, 16, 32) where a group's size allows; default 1")
    pr.add_argument("--device", default="cpu", help="--cost latency: cpu, cuda or cuda:N (default cpu)")
    pr.add_argument("--batch", type=_whole, default=T.batch, metavar="N",
                    help=f"--cost latency: batch size timed (default {T.batch})")
    pr.add_argument("--threads", type=_whole, default=T.threads, metavar="N",
                    help=f"--cost latency: torch threads (default {T.threads})")
    pr.add_argument("--amp", action="store_true", help="--cost latency on CUDA: fp16 autocast + channels_last")
    pr.add_argument("--table-repeats", type=_whole, default=T.repeats, metavar="N",
                    help=f"--cost latency: timing rounds per layer (median; default {T.repeats})")
    pr.add_argument("--land-rounds", type=_whole_or_zero, default=T.land_rounds,
                    metavar="N", help="--cost latency: re-prune at most N times at corrected table budgets until the "
                    f"measured pruned/dense latency is within {T.land_tolerance * 100:g}%% of --budget (default "
                    f"{T.land_rounds}; 0 = the table's allocation)")
    pr.add_argument("--min-sample-s", type=float, default=T.min_sample_s, metavar="SECONDS",
                    help="--cost latency: each timing sample repeats the forward until it lasts this long, in "
                         f"(0, 10] (default {T.min_sample_s:g}; shorter is faster and noisier)")
    pr.add_argument("--cache-dir", default=None, metavar="DIR",
                    help="--cost latency: table cache (default $KPID_CACHE_DIR/latency or ~/.cache/kpid/latency)")


def main(argv: list[str] | None = None) -> int:
    from kpid_core.errors import KPIDError

    parser, _ = build_parser()
    args = parser.parse_args(argv)
    try:
        func = getattr(args, "func", None)
        if func is None:
            from kpid_core import trial_cli

            return int(trial_cli.run(args))
        return int(func(args))
    except KPIDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C in any subcommand: one line, no traceback (130 = 128 + SIGINT)
        print(f"interrupted: {getattr(args, 'command', None) or 'kpid_core'} stopped before it finished", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
