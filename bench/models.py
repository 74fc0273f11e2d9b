"""Every model by name: prune to 0.5 → forward/backward → save → load → identical outputs.

For each torchvision classifier (its whole classification registry) and the smallest model of 30+
timm CNN families, each stopped after ``--timeout`` seconds (``--isolate``: in a subprocess of its own):

* ``kpid``: ``prune_to_budget(model, input, 0.5)`` with the data-free L1 scores, then a training-mode
  forward/backward of the pruned model, ``save_pruned`` → ``load_pruned`` and a bit-for-bit
  comparison of the outputs; the time is the pruning call alone.
* ``tp``: Torch-Pruning's own global magnitude pruning of the same model in the same process
  (``bench/_anchors.tp_global_stepped``, 10 steps, stopped at the first step under the budget).

Rows go to a CSV (the data); ``--md`` writes the table, ``--readme`` regenerates the README's model
table from the CSV (``tests/bench/test_models_table.py`` fails when the two disagree).

Usage: ``python bench/models.py [--quick] [--input PIXELS] [--models a,b] [--csv F] [--md F] [--readme]``
(``--quick``: a few small models at 32 px).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._header import command_line, header_lines

# The smallest model of each timm CNN family (one name per family).
TIMM_FAMILIES = {
    "ResNet": "resnet10t", "ResNet-D": "resnet26d", "ECA-ResNet": "ecaresnet26t", "SE-ResNeXt": "seresnext26d_32x4d",
    "EfficientNet": "efficientnet_b0", "TF-EfficientNet": "tf_efficientnet_b0", "EfficientNet-Lite":
    "efficientnet_lite0", "MobileNetV2": "mobilenetv2_050", "MobileNetV3": "mobilenetv3_small_050",
    "MobileNetV4": "mobilenetv4_conv_small", "MixNet": "mixnet_s", "GhostNet": "ghostnet_050",
    "GhostNetV2": "ghostnetv2_100", "ReXNet": "rexnet_100", "RegNetX": "regnetx_002", "RegNetY": "regnety_002",
    "RegNetZ": "regnetz_b16", "ConvNeXt": "convnext_atto", "CSPResNet": "cspresnet50", "CSPDarkNet": "cspdarknet53",
    "DLA": "dla34", "HRNet": "hrnet_w18_small", "Res2Net": "res2net50_26w_4s", "ResNeSt": "resnest14d",
    "RepVGG": "repvgg_a0", "LCNet": "lcnet_050", "FBNet": "fbnetc_100", "MnasNet": "mnasnet_050",
    "SPNASNet": "spnasnet_100", "TinyNet": "tinynet_e", "HardCoReNAS": "hardcorenas_a", "DenseNet": "densenet121",
    "VoVNet": "ese_vovnet19b_dw", "GENet": "gernet_s", "SelecSLS": "selecsls42b", "SKResNet": "skresnet18",
    "EfficientViT": "efficientvit_b0", "HGNetV2": "hgnetv2_b0", "NF-ResNet": "nf_resnet26", "DPN": "dpn48b",
}
QUICK = ["resnet18", "mobilenet_v3_small", "timm:resnet10t", "timm:lcnet_050", "shufflenet_v2_x0_5"]
COLUMNS = ["model", "source", "status", "macs_dense", "macs_ratio", "reload_equal", "kpid_s", "tp_s",
           "tp_ratio", "message"]
README_BEGIN, README_END = "<!-- models-table:begin -->", "<!-- models-table:end -->"


# Run last: the largest torchvision models (a run stopped early has measured the rest).
_LARGE = ("alexnet", "vgg", "resnet152", "resnext101", "wide_resnet101", "convnext_base", "convnext_large",
          "densenet161", "densenet201", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_m",
          "efficientnet_v2_l", "regnet_x_16gf", "regnet_x_32gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf")
# The fewest pixels a model runs at (Inception-v3's stem and reductions need 75).
_MIN_INPUT = {"inception_v3": 75}


def all_names() -> list[str]:
    """One timm model per family, then every torchvision classification name (refused ones too),
    the largest last."""
    from kpid_core._tv import torchvision

    tv = torchvision.models.list_models(module=torchvision.models)
    return ([f"timm:{n}" for n in TIMM_FAMILIES.values()] + [n for n in tv if not n.startswith(_LARGE)]
            + [n for n in tv if n.startswith(_LARGE)])


def _tp_time(model, x, budget: float) -> tuple[float | None, float | None, str]:
    """Torch-Pruning's time and MAC ratio on ``model``, or its failure as the row's message. When
    the row's ``--timeout`` runs out during the anchor, kpid's measurements (already taken) stay and
    the message says so (torch-pruning's own group search on ECA-ResNets takes many minutes)."""
    from bench._anchors import tp_global_stepped

    t0 = time.perf_counter()
    try:
        ratio = tp_global_stepped(model, x, budget, steps=10)
        return time.perf_counter() - t0, ratio, ""
    except _Timeout:
        return None, None, f"tp: not finished when the row's --timeout ran out ({time.perf_counter() - t0:.0f} s in)"
    except Exception as exc:  # noqa: BLE001 (the anchor's failure is a result)
        return None, None, f"tp: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def run_one(name: str, size: int | None, budget: float = 0.5) -> dict:
    """One model through prune → forward/backward → save → load; the row of the table."""
    import copy
    import tempfile

    import torch

    from kpid_core.errors import InfeasibleBudgetError, KPIDError
    from kpid_core.models import build_model, model_input_size
    from kpid_core.prune import load_pruned, prune_to_budget, save_pruned

    row = {c: None for c in COLUMNS} | {"model": name, "source": "timm" if name.startswith("timm:") else "torchvision"}
    try:
        px = max(size or model_input_size(name), _MIN_INPUT.get(name, 1))
        torch.manual_seed(0)
        model = build_model(name, num_classes=1000).eval()
        x = torch.randn(2, 3, px, px)
        t0 = time.perf_counter()
        res = prune_to_budget(model, x[:1], budget, model_name=name, model_kwargs={})
        row["kpid_s"] = round(time.perf_counter() - t0, 2)
        row["macs_dense"], row["macs_ratio"] = res.macs_before, round(res.macs_ratio, 5)
        res.model.train()(x).sum().backward()
        with tempfile.TemporaryDirectory() as d:
            save_pruned(res, d)
            loaded = load_pruned(d).eval()
            with torch.no_grad():
                row["reload_equal"] = bool(torch.equal(res.model.eval()(x), loaded(x)))
        ok = row["reload_equal"] and abs(res.macs_ratio - budget) <= 0.005 * budget
        row["status"] = "ok" if ok else "wrong"
        tp_s, tp_ratio, msg = _tp_time(copy.deepcopy(model), x[:1], budget)
        row["tp_s"], row["tp_ratio"], row["message"] = tp_s and round(tp_s, 2), tp_ratio and round(tp_ratio, 4), msg
    except InfeasibleBudgetError as exc:
        row["status"], row["message"] = "infeasible", str(exc)
    except KPIDError as exc:
        row["status"], row["message"] = "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 (any other failure is a finding of the benchmark)
        row["status"], row["message"] = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return row


class _Timeout(BaseException):  # not an Exception: run_one must not record it as one
    pass


def _in_process(name: str, size: int | None, timeout: float) -> dict:
    """:func:`run_one` in this process, stopped by SIGALRM after ``timeout`` seconds (the slow parts
    are Python loops, which the signal interrupts)."""
    import signal

    def stop(signum, frame):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(max(1, int(timeout)))
    try:
        return run_one(name, size)
    except _Timeout:
        return {c: None for c in COLUMNS} | {"model": name, "status": "error", "message": f"timeout after {timeout:g} s",
                                             "source": "timm" if name.startswith("timm:") else "torchvision"}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _in_subprocess(name: str, size: int | None, timeout: float) -> dict:
    cmd = [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--worker", name]
    if size:
        cmd += ["--input", str(size)]
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if lines:
            return json.loads(lines[-1])
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        msg = f"exit {out.returncode}: {tail[:200]}"
    except subprocess.TimeoutExpired:
        msg = f"timeout after {timeout:g} s"
    return {c: None for c in COLUMNS} | {"model": name, "status": "error", "message": msg,
                                         "source": "timm" if name.startswith("timm:") else "torchvision"}


def markdown_table(rows: list[dict]) -> list[str]:
    """The benchmark's full table (every column that a reader compares)."""
    out = ["| model | status | MACs (dense) | MAC ratio | reload identical | kpid s | Torch-Pruning s | TP ratio | note |",
           "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        macs = "" if r["macs_dense"] in (None, "") else int(float(r["macs_dense"]))
        out.append(f"| {r['model']} | {r['status']} | {macs} | {r['macs_ratio'] or ''} | "
                   f"{'' if r['reload_equal'] is None else r['reload_equal']} | {r['kpid_s'] or ''} | "
                   f"{r['tp_s'] or ''} | {r['tp_ratio'] or ''} | {(r['message'] or '')[:140]} |")
    return out


def summary(rows: list[dict]) -> list[str]:
    """Counts per source and status, and Torch-Pruning's time over ours, paired per model
    (median and quartiles over the models where both ran)."""
    import numpy as np

    out = []
    for src in ("torchvision", "timm"):
        mine = [r for r in rows if r["source"] == src]
        counts = {st: sum(r["status"] == st for r in mine) for st in ("ok", "refused", "infeasible", "wrong", "error")}
        out.append(f"{src}: {len(mine)} models; " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    ratios = np.array([float(r["tp_s"]) / float(r["kpid_s"]) for r in rows
                       if r["status"] == "ok" and r["tp_s"] not in (None, "") and r["kpid_s"]])
    if ratios.size:
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        out.append(f"Torch-Pruning time / kpid time, paired per model ({ratios.size} models where both ran): "
                   f"median {med:.2f}, quartiles {q1:.2f}–{q3:.2f}")
    return out


def readme_table(rows: list[dict]) -> str:
    """The README's model list, derived from the benchmark's rows only."""
    def names(src: str, status: str) -> str:
        return ", ".join(r["model"] for r in rows if r["source"] == src and r["status"] == status) or "none"

    lines = [README_BEGIN, f"{len(rows)} names measured (see bench/BENCHMARKS.models.md):", ""]
    for src in ("torchvision", "timm"):
        n_ok = sum(r["source"] == src and r["status"] == "ok" for r in rows)
        lines.append(f"- **{src}, prune to 0.5 within 0.5 % and reload identically ({n_ok}):** {names(src, 'ok')}")
        for status in ("refused", "infeasible", "wrong", "error"):
            if any(r["source"] == src and r["status"] == status for r in rows):
                lines.append(f"- {src}, {status}: {names(src, status)}")
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(path: str, rows: list[dict]) -> None:
    """Replace the README's generated model table (between the markers) with :func:`readme_table`."""
    from pathlib import Path

    text = Path(path).read_text()
    a, b = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    Path(path).write_text(text[:a] + readme_table(rows) + text[b:])


def read_csv(path: str) -> list[dict]:
    """The rows a previous run wrote (pandas opens the same file)."""
    import pandas as pd

    df = pd.read_csv(path, dtype={"message": str}, keep_default_na=False)
    return df.to_dict("records")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few small models at 32 px (smoke run)")
    p.add_argument("--input", type=int, default=None, metavar="PIXELS",
                   help="square input size for every model (default: each model's own, e.g. 224)")
    p.add_argument("--models", default=None, help="comma-separated names (default: all)")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds per model (default 900); a Torch-Pruning run still going then is stopped and "
                        "kpid's measurements kept (with --isolate the whole row is lost)")
    p.add_argument("--csv", default=None, help="write the rows here (CSV)")
    p.add_argument("--md", default=None, help="write the markdown table here")
    p.add_argument("--readme", default=None, metavar="README", help="regenerate this README's model table")
    p.add_argument("--from-csv", default=None, metavar="CSV", help="no run: read rows from this CSV")
    p.add_argument("--isolate", action="store_true",
                   help="run each model in a subprocess of its own (a crash cannot stop the run; ~10-40 s of "
                        "imports per model)")
    p.add_argument("--note", action="append", default=[], help="an extra line for the markdown head (repeatable)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.input is not None and args.input < 1:
        p.error(f"--input {args.input}: expected a whole number of pixels >= 1")
    if args.worker:
        print(json.dumps(run_one(args.worker, args.input)), flush=True)
        return 0
    if args.from_csv:
        rows = read_csv(args.from_csv)
    else:
        names = args.models.split(",") if args.models else (QUICK if args.quick else all_names())
        size = 32 if args.quick and args.input is None else args.input
        rows = []
        for i, name in enumerate(names, 1):
            rows.append((_in_subprocess if args.isolate else _in_process)(name, size, args.timeout))
            r = rows[-1]
            print(f"[{i}/{len(names)}] {name}: {r['status']} ratio={r['macs_ratio']} kpid_s={r['kpid_s']} "
                  f"tp_s={r['tp_s']} {(r['message'] or '')[:100]}", flush=True)
            if args.csv:  # after every model: a long run that is stopped keeps what it measured
                import pandas as pd

                pd.DataFrame(rows, columns=COLUMNS).to_csv(args.csv, index=False)
    if args.md:
        cmd = command_line("bench/models.py", [a for a in (argv if argv is not None else sys.argv[1:])])
        with open(args.md, "w") as f:
            notes = [(f"Input: {args.input or 'each model’s own size'} px; budget 0.5; data-free L1 scores; "
                     "random init (landing and reload do not depend on the weights)"),
                     ("status: ok = MAC ratio within 0.5 % of 0.5, forward/backward ran, and the reloaded model's "
                     "outputs equal the pruned model's bit for bit; refused / infeasible = one-line KPID error; "
                     "error = anything else (incl. timeouts)"),
                     ("kpid s = prune_to_budget alone; Torch-Pruning s = its global magnitude pruner on the same "
                     "model in the same process, 10 steps, stopped at the first step under the budget (TP ratio)"),
                     *(f"Run: {n}" for n in args.note)]
            f.write("\n".join(header_lines("Every model by name: prune 0.5 → save → load", cmd, notes=notes)
                              + [f"- {line}" for line in summary(rows)] + [""] + markdown_table(rows)) + "\n")
    if args.readme:
        update_readme(args.readme, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
