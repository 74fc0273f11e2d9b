"""ONNX export of a (pruned) model, for deployment and latency measurement outside PyTorch."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["export_onnx"]


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape=(3, 224, 224)) -> Path:
    """Export ``model`` (eval mode, batch dim dynamic) to ONNX at ``path``.

    Args:
        model: the model; its training mode is restored afterwards.
        path: the ``.onnx`` file to write (parent directories are created).
        input_shape: (C, H, W) of one input image; the graph's input is named ``input``, its
            output ``logits``.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    p = next(iter(model.parameters()), None)
    x = torch.zeros(1, *input_shape, device=p.device if p is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        # the dynamo exporter needs onnxscript; the classic exporter needs only onnx
        use_dynamo = importlib.util.find_spec("onnxscript") is not None
        kw = {"dynamo": use_dynamo}
        if not use_dynamo:
            kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
        with warnings.catch_warnings():  # the classic exporter announces its own deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"], **kw)
    finally:
        model.train(was_training)
    return path
