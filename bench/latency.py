"""Real speed: is the pruned network as much faster as its MACs say?

For resnet50 and mobilenet_v3_large (random init; speed does not depend on the weights) at MAC
budgets 0.5 and 0.3, time dense and pruned models side by side and report

    efficiency = realised speed-up / MAC speed-up = (t_dense / t_pruned) / (macs_dense / macs_pruned)

for: ``ours`` (knapsack allocation, data-free L1 scores), ``ours_r8`` (the same knapsack solved in
blocks of 8 channels, so every kept count is a multiple of 8 — oneDNN's vector width), ``tp_global``
(torch-pruning global magnitude, bisected to the same MAC target) and ``uniform`` (same kept
fraction in every layer, same MACs). ``--cost latency`` adds ``ours_lat``: the knapsack with a
measured per-layer latency table as its cost instead of MACs (HALP style), at the same target
fraction of the modelled latency; compare its realised speed-up with 1/budget.

Timing: ``torch.inference_mode``, fixed threads, warm-up, then rounds in which every variant is
timed once in a rotating order (ABAB… interleaved, so load drifts hit all variants alike), each
sample after an untimed settle call and in a steady memory state (the product's
``kpid_core.engine.timing.time_interleaved``, timing version 3 since 2026-12-03; the tables below
that date were timed by this script's own loop, without either); the speed-up is the median over
rounds of the paired ratio t_dense / t_variant.

Usage: ``python bench/latency.py [--quick] [--cost latency] [--device cpu|cuda] [--md FILE]``
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._anchors import tp_global_to_macs, uniform_prune
from bench._header import command_line, header_lines
from kpid_core.engine.allocation import allocate
from kpid_core.engine.groups import ChannelGroups, find_groups, is_depthwise
from kpid_core.engine.importance import compute_importance
from kpid_core.engine.latency_table import time_calls, time_interleaved
from kpid_core.engine.macs import count_macs
from kpid_core.models import build_model
from kpid_core.prune import prune_to_budget

__all__ = ["LayerCostTable", "blocked_groups", "latency_groups", "main", "measure_layer_costs", "prune_kept"]

MODELS = ["resnet50", "mobilenet_v3_large"]
BUDGETS = [0.5, 0.3]
BATCHES = [1, 8]
GOAL_B8, GOAL_B1 = 0.97, 0.85
# measured on this machine before (torch-pruning global magnitude / uniform, at 2x MACs)
REFERENCE = {"tp_global": (0.75, 0.97), "uniform": (0.68, 0.79)}  # (batch 1, batch 8)


# ---- pruning to explicit kept channels -------------------------------------------------------------
def prune_kept(model: nn.Module, x: torch.Tensor, kept: dict[str, list[int]]) -> nn.Module:
    """A copy of ``model`` with only the ``kept[group_key]`` channels of each group (torch-pruning
    surgery on kpid's channel groups; groups missing from ``kept`` stay whole)."""
    work = copy.deepcopy(model)
    G = find_groups(work, x)
    for g in G:
        if g.key not in kept:
            continue
        keep = set(kept[g.key])
        drop = [i for i in range(g.size) if i not in keep]
        if drop:
            G.dg.get_pruning_group(g.root, g.prune_fn, drop).prune(record_history=False)
    return work


def _ranked(v: np.ndarray) -> np.ndarray:
    return np.lexsort((np.arange(len(v)), -v))  # descending score, ties by index (as prune.allocate)


def blocked_groups(G: ChannelGroups, step: int = 8) -> tuple[ChannelGroups, np.ndarray]:
    """A view of ``G`` whose unit is a block of ``step`` channels (groups whose size is not a
    multiple of ``step`` keep unit 1). The MAC model stays exact: k_channels = step · k_blocks."""
    steps = np.array([step if s % step == 0 else 1 for s in G.sizes], dtype=np.int64)
    Gb = copy.copy(G)
    Gb.sizes = G.sizes // steps
    Gb.A, Gb.B = G.A * steps[None, :], G.B * steps[None, :]
    Gb.groups = [dataclasses.replace(g, size=int(s)) for g, s in zip(G.groups, Gb.sizes)]
    return Gb, steps


def allocate_blocked(G: ChannelGroups, vectors: list[np.ndarray], budget: float, step: int = 8,
                     min_keep: float = 0.1) -> dict[str, list[int]]:
    """Knapsack allocation (the engine's :func:`~kpid_core.engine.allocation.allocate`) in blocks of ``step``
    channels: every kept count is a multiple of ``step`` where the group size allows."""
    Gb, steps = blocked_groups(G, step)
    orders = [_ranked(v) for v in vectors]
    block_vals = [v[o].reshape(-1, s).sum(1) for v, o, s in zip(vectors, orders, steps)]
    kb = allocate(Gb, block_vals, budget, min_keep=min_keep, allocation="knapsack")
    return {g.key: sorted(int(i) for i in orders[g.index][: len(kb[g.key]) * steps[g.index]]) for g in G}


# ---- latency cost model (HALP style) -----------------------------------------------------------------
@dataclasses.dataclass
class LayerCostTable:
    """Per conv/linear call: seconds per MAC (per image) fitted on the target device at one batch."""

    seconds_per_mac: np.ndarray
    batch: int
    device: str


def _input_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str):
        def record(_mod, inp, _out) -> None:  # must return None: a value would replace the output
            shapes.setdefault(name, tuple(inp[0].shape))
        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return shapes


def _standalone(m: nn.Module, cin: int, cout: int) -> nn.Module:
    if isinstance(m, nn.Linear):
        return nn.Linear(cin, cout, bias=m.bias is not None)
    groups = cin if is_depthwise(m) else 1
    if groups > 1:
        cout = cin  # depthwise: out channels are the in channels
    return nn.Conv2d(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, groups, m.bias is not None)


def measure_layer_costs(model: nn.Module, G: ChannelGroups, x: torch.Tensor, batch: int, run: Runner,
                        repeats: int = 5, frac: float = 0.5) -> LayerCostTable:
    """Time every conv/linear layer of ``G`` alone at full width and with its prunable channel dims
    scaled by ``frac``; the slope of time over MACs is that layer's cost per MAC on this device."""
    shapes = _input_shapes(model, x)
    modules = dict(model.named_modules())
    spm = np.zeros(len(G.layers))
    for i, lay in enumerate(G.layers):
        m = modules[lay.name]
        in_shape = (batch, *shapes[lay.name][1:])
        prunable_in, prunable_out = bool(G.A[i].any()) or lay.groups > 1, bool(G.B[i].any())
        dw = lay.groups > 1
        variants = []
        for f in (1.0, frac):
            cin = max(1, round(lay.in_channels * f)) if prunable_in and f < 1 else lay.in_channels
            cout = max(1, round(lay.out_channels * f)) if (prunable_out or dw) and f < 1 else lay.out_channels
            mod = _standalone(m, cin, cout)
            macs = lay.coef * (1 if dw else cin) * (cin if dw else cout)
            variants.append((mod, (*in_shape[:1], cin, *in_shape[2:]), macs))
        fns = [run.prepare(mod, shape) for mod, shape, _ in variants]
        t = time_interleaved(fns, repeats, run)
        medians = [statistics.median(ts) for ts in t]
        (m1, t1), (m2, t2) = (variants[0][2], medians[0]), (variants[1][2], medians[1])
        slope = (t1 - t2) / (m1 - m2) if m1 != m2 else t1 / m1
        spm[i] = slope / batch
    pos = spm[spm > 0]
    floor = 0.2 * float(np.median(pos)) if len(pos) else 1e-12
    return LayerCostTable(np.maximum(spm, floor), batch, str(run.device))  # noise can make a slope ≤ 0


def latency_groups(G: ChannelGroups, table: LayerCostTable) -> ChannelGroups:
    """A view of ``G`` whose "MACs" are modelled picoseconds: each layer's MAC coefficient times
    its measured seconds per MAC. ``allocate`` on it budgets latency instead of MACs."""
    Gl = copy.copy(G)
    Gl.coef = G.coef.astype(np.float64) * table.seconds_per_mac * 1e12
    return Gl


# ---- timing ------------------------------------------------------------------------------------------
class Runner:
    """Prepares a model on a device and times calls of it (CPU: perf_counter; CUDA: events)."""

    def __init__(self, device: str, amp: str | None, threads: int):
        self.device = torch.device(device)
        self.amp = {"fp16": torch.float16, "bf16": torch.bfloat16, None: None}[amp]
        torch.set_num_threads(threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...]) -> Callable[[], None]:
        model = model.eval().to(self.device)
        x = torch.randn(*input_shape, device=self.device)
        if self.device.type == "cuda" and x.dim() == 4:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def call() -> None:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp,
                                                        enabled=self.amp is not None):
                model(x)

        return call

    def time(self, fn: Callable[[], None], n: int) -> float:
        """Seconds per call, averaged over ``n`` back-to-back calls."""
        return time_calls(fn, n, self.device)


# ---- the benchmark -----------------------------------------------------------------------------------
def build_variants(name: str, x: torch.Tensor, budgets: list[float], cost: str, run: Runner,
                   table_batch: int, log) -> list[dict]:
    """Dense + every pruned variant of ``name`` at each budget: dicts with model/macs/label."""
    dense = build_model(name).eval()
    shape = tuple(x.shape[1:])
    dense_macs = count_macs(dense, shape)
    scores = compute_importance(dense, x, "l1")
    G = find_groups(copy.deepcopy(dense), x)
    vectors = [scores.scores[g.key].numpy().astype(np.float64) for g in G]
    table = None
    if cost == "latency":
        t0 = time.perf_counter()
        table = measure_layer_costs(dense, G, x, table_batch, run)
        log(f"  {name}: latency table for {len(G.layers)} layers at batch {table_batch} "
            f"({time.perf_counter() - t0:.0f} s)")
    rows = [{"model": name, "budget": 1.0, "variant": "dense", "net": dense, "macs": dense_macs}]
    for b in budgets:
        t0 = time.perf_counter()
        cands = {
            "ours": prune_to_budget(dense, x, b, scores).model,
            "ours_r8": prune_kept(dense, x, allocate_blocked(G, vectors, b)),
            "tp_global": tp_global_to_macs(dense, x, b)[0],
            "uniform": uniform_prune(dense, x, b)[0],
        }
        if table is not None:
            cands["ours_lat"] = prune_kept(dense, x, allocate(latency_groups(G, table), vectors, b))
        for v, net in cands.items():
            rows.append({"model": name, "budget": b, "variant": v, "net": net.eval(),
                         "macs": count_macs(net, shape)})
        log(f"  {name} @ {b}: pruned {len(cands)} variants ({time.perf_counter() - t0:.0f} s)")
    if table is not None:  # modelled latency ratio of every variant (what ours_lat budgets)
        Gl = latency_groups(G, table)
        for r in rows:
            r["lat_model"] = _modelled(Gl, r["net"], x) / Gl.macs()
    return rows


def _modelled(Gl: ChannelGroups, net: nn.Module, x: torch.Tensor) -> float:
    """Modelled latency of a pruned net: its kept counts per group read from its layer widths."""
    from kpid_core.engine.macs import trace_layers

    layers = trace_layers(net, tuple(x.shape[1:]))[0]
    cin = np.array([lay.in_channels // lay.groups for lay in layers], dtype=np.float64)
    cout = np.array([lay.out_channels for lay in layers], dtype=np.float64)
    return float(np.sum(Gl.coef * cin * cout))


def measure(rows: list[dict], batches: list[int], size: int, repeats: dict[int, int], run: Runner) -> None:
    """Adds ``speedup_b{B}`` (median paired t_dense/t_variant) and ``ms_b{B}`` to every row."""
    for b in batches:
        fns = [run.prepare(r["net"], (b, 3, size, size)) for r in rows]
        samples = time_interleaved(fns, repeats[b], run)
        dense = samples[0]
        for r, s in zip(rows, samples):
            r[f"ms_b{b}"] = statistics.median(s) * 1e3
            r[f"speedup_b{b}"] = statistics.median(d / t for d, t in zip(dense, s))


def render(rows: list[dict], batches: list[int], cost: str) -> list[str]:
    head = "| model | budget | variant | MACs ratio |"
    sep = "|---|---|---|---|"
    if cost == "latency":
        head += " modelled latency ratio |"
        sep += "---|"
    for b in batches:
        head += f" b{b} ms | b{b} speed-up | b{b} efficiency |"
        sep += "---|---|---|"
    lines = [head, sep]
    dense = {r["model"]: r["macs"] for r in rows if r["variant"] == "dense"}
    for r in rows:
        mr = r["macs"] / dense[r["model"]]
        line = f"| {r['model']} | {r['budget']:.2f} | {r['variant']} | {mr:.4f} |"
        if cost == "latency":
            line += f" {r['lat_model']:.4f} |"
        for b in batches:
            eff = r[f"speedup_b{b}"] * mr
            line += f" {r[f'ms_b{b}']:.1f} | {r[f'speedup_b{b}']:.2f}x | {eff:.2f} |"
        lines.append(line)
    return lines


def summary(rows: list[dict], batches: list[int]) -> list[str]:
    """Median efficiency per variant over models and budgets, vs the goal and the references."""
    out = []
    dense = {r["model"]: r["macs"] for r in rows if r["variant"] == "dense"}
    for v in dict.fromkeys(r["variant"] for r in rows if r["variant"] != "dense"):
        parts = []
        for b in batches:
            effs = [r[f"speedup_b{b}"] * r["macs"] / dense[r["model"]] for r in rows if r["variant"] == v]
            parts.append(f"b{b} {statistics.median(effs):.2f} (min {min(effs):.2f})")
        ref = REFERENCE.get(v)
        tail = f"; reference at 2x MACs: b1 {ref[0]}, b8 {ref[1]}" if ref else ""
        out.append(f"{v:<10} efficiency median over models x budgets: {', '.join(parts)}{tail}")
    ours = [r for r in rows if r["variant"] == "ours"]
    for b, goal in ((8, GOAL_B8), (1, GOAL_B1)):
        if b in batches and ours:
            worst = min(r[f"speedup_b{b}"] * r["macs"] / dense[r["model"]] for r in ours)
            out.append(f"goal ours b{b} >= {goal}: {'met' if worst >= goal else 'MISSED'} (worst {worst:.2f})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="mobilenet_v3_large only, 160 px, fewer repeats (< 3 min)")
    ap.add_argument("--dry", action="store_true", help="smoke run: 32 px, 2 repeats, batch 1 (checks the code path)")
    ap.add_argument("--models", default=None, help=f"comma list (default {','.join(MODELS)})")
    ap.add_argument("--budgets", default=None, help="comma list of MAC fractions (default 0.5,0.3)")
    ap.add_argument("--size", type=int, default=None, help="input side in pixels (default 224; quick 160)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per batch size (default b1 21, b8 9)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", default=None, help="CUDA only: fp16 or bf16 autocast")
    ap.add_argument("--cost", default="mac", help="mac, or latency: also prune with a measured latency table")
    ap.add_argument("--md", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if args.device not in ("cpu", "cuda"):
        return fail(f"--device {args.device!r}: allowed values: cpu, cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        return fail(f"--device cuda: CUDA is not available (torch {torch.__version__}); allowed here: cpu")
    if args.amp not in (None, "fp16", "bf16"):
        return fail(f"--amp {args.amp!r}: allowed values: fp16, bf16")
    if args.amp and args.device != "cuda":
        return fail("--amp: only with --device cuda (CPU timing is fp32)")
    if args.cost not in ("mac", "latency"):
        return fail(f"--cost {args.cost!r}: allowed values: mac, latency")
    if args.threads < 1:
        return fail(f"--threads must be >= 1, got {args.threads}")
    try:
        models = args.models.split(",") if args.models else (["mobilenet_v3_large"] if args.quick else MODELS)
        budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else BUDGETS
    except ValueError:
        return fail(f"--budgets {args.budgets!r}: expected comma-separated numbers in (0, 1)")
    if not all(0 < b < 1 for b in budgets):
        return fail(f"--budgets {args.budgets!r}: each must be in (0, 1)")
    from kpid_core.models import MODEL_NAMES

    bad = [m for m in models if m not in MODEL_NAMES or m.startswith(("digits", "resnet20", "resnet56", "resnet110"))]
    if bad:
        return fail(f"--models {bad[0]!r}: allowed values: ImageNet-size torchvision models, e.g. {', '.join(MODELS)}")
    if args.md and os.path.exists(args.md) and os.path.isdir(args.md):
        return fail(f"--md {args.md!r} is a directory")

    size = args.size or (32 if args.dry else 160 if args.quick else 224)
    batches = [1] if args.dry else BATCHES
    rep = args.repeats or (2 if args.dry else 0)
    repeats = {1: rep or (11 if args.quick else 21), 8: rep or (5 if args.quick else 9)}
    table_batch = 8 if 8 in batches else 1
    run = Runner(args.device, args.amp, args.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_all = time.perf_counter()
    x = torch.zeros(1, 3, size, size)
    rows: list[dict] = []
    for name in models:
        t0 = time.perf_counter()
        mrows = build_variants(name, x, budgets, args.cost, run, table_batch, log)
        measure(mrows, batches, size, repeats, run)
        log(f"  {name}: timed in {time.perf_counter() - t0:.0f} s")
        rows += mrows
    lines = render(rows, batches, args.cost)
    summ = summary(rows, batches)
    setting = "dry" if args.dry else "quick" if args.quick else "full"
    print(f"CPU latency, {setting} setting: {size}x{size}, {args.threads} thread(s), device {args.device}"
          f"{' ' + args.amp if args.amp else ''}, repeats {repeats}, cost model {args.cost}")
    print("\n".join(lines))
    print("\n".join(summ))
    print(f"({time.perf_counter() - t_all:.0f} s)")
    if args.md:
        cmd = command_line("bench/latency.py", list(argv if argv is not None else sys.argv[1:]))
        head = header_lines("Latency: realised speed-up vs MAC speed-up", cmd, device=f"device {args.device}", notes=[
            (f"Setting: {setting}, {size}x{size} input, {args.threads} thread(s), repeats {repeats}, "
            "random-init weights, L1 scores"),
            ("Efficiency = (t_dense / t_pruned) / (MACs_dense / MACs_pruned); speed-up = median over "
            "interleaved rounds of the paired ratio t_dense / t_pruned.")])
        with open(args.md, "w") as f:
            f.write("\n".join(head) + "\n")
            f.write("\n".join(lines) + "\n\n" + "\n".join(f"- {s}" for s in summ) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
