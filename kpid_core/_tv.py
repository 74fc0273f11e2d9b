"""The one place that imports torchvision.

On a CPU-only torch, the only torchvision wheel the registries offer is a CUDA build whose compiled
extension cannot load; ``import torchvision`` then dies with ``RuntimeError: operator
torchvision::nms does not exist`` (pytorch/vision#9077, #9085). Models, datasets, transforms and
weights metadata are pure Python; they only need the op schemas that torchvision's meta
registrations look up. When the real extension loads (a normal GPU install) this module does
nothing but import torchvision.

Everything in this project imports torchvision as ``from kpid_core._tv import torchvision``.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["EXTENSION_LOADED", "torchvision"]

# Schemas as torchvision's C++ extension declares them (torchvision/csrc/ops/nms.cpp, quantized qnms).
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIB = None  # kept alive: dropping the Library object would unregister the schemas


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _define_missing_schemas() -> None:
    global _LIB
    missing = [n for n in _SCHEMAS if not _op_exists(n)]
    if not missing:
        return
    _LIB = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 (schema-only library)
    for name in missing:
        _LIB.define(_SCHEMAS[name])


def _import():
    try:
        import torchvision as tv

        return tv, True
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    # A failed import leaves half-initialised submodules behind; drop them before retrying.
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    _define_missing_schemas()
    import torchvision as tv

    return tv, False


torchvision, EXTENSION_LOADED = _import()
