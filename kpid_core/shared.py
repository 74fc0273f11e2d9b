"""What every trial of a sweep shares, computed once: the data split, the trained teacher and the
channel importance per metric (``prepare_shared`` writes them as files, ``SharedArtifacts`` names
them), and the steps a trial and a same-data baseline take to get their data and teacher with or
without them (``trial_data``, ``load_teacher``, ``teacher_importance``, ``shared_scores``).

``kpid_core.trial`` re-exports the public names (their contract is in docs/CONTRACTS.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kpid_core.config import TrialConfig
from kpid_core.engine.spec import cpu_state_dict
from kpid_core.errors import SpecError
from kpid_core.files import atomic_save, atomic_write_text
from kpid_core.models import build_model, model_in_channels
from kpid_core.training.data import DataBundle, build_data
from kpid_core.training.teacher import Teacher, get_teacher, load_state_dict_file, model_kwargs
from kpid_core.training.train import resolve_device, seed_everything

if TYPE_CHECKING:
    from kpid_core.engine.importance import ImportanceScores

__all__ = [
    "SharedArtifacts",
    "example_input",
    "load_teacher",
    "prepare_shared",
    "shared_scores",
    "teacher_importance",
    "trial_data",
]

@dataclass
class SharedArtifacts:
    """Files a sweep computes once (paths are absolute): the data split (JSON), the teacher's state
    dict and its test accuracy, and one importance file per metric."""

    root: Path
    split: Path
    teacher: Path
    teacher_accuracy: float
    importance: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "split": str(self.split), "teacher": str(self.teacher),
                "teacher_accuracy": self.teacher_accuracy,
                "importance": {k: str(v) for k, v in self.importance.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SharedArtifacts:
        """Build from :meth:`to_dict`'s fields (what Ray passes to a trial).

        Args:
            d: a mapping with ``root``, ``split``, ``teacher``, ``teacher_accuracy`` and optionally
                ``importance`` (metric name → path).

        Returns:
            The artifacts, with every path a :class:`~pathlib.Path`.
        """
        return cls(Path(d["root"]), Path(d["split"]), Path(d["teacher"]), float(d["teacher_accuracy"]),
                   {k: Path(v) for k, v in d.get("importance", {}).items()})

    @classmethod
    def load(cls, root: str | os.PathLike) -> SharedArtifacts:
        """Read ``root/shared.json`` written by :func:`prepare_shared`.

        Args:
            root: the directory :func:`prepare_shared` wrote.

        Returns:
            The artifacts recorded there. Raises SpecError when the file is missing or malformed.
        """
        p = Path(root) / "shared.json"
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SpecError(f"shared artifacts {str(p)!r} are missing or malformed: {exc}") from None

    @classmethod
    def coerce(cls, shared: SharedArtifacts | Mapping[str, Any] | str | os.PathLike | None) -> SharedArtifacts | None:
        """Whatever a caller passed as ``shared`` (Ray hands trials strings and dicts) as artifacts.

        Args:
            shared: None, an instance, a :meth:`to_dict` mapping, or the directory holding ``shared.json``.

        Returns:
            None for None, else the artifacts.
        """
        if shared is None or isinstance(shared, SharedArtifacts):
            return shared
        if isinstance(shared, Mapping):
            return cls.from_dict(shared)
        return cls.load(shared)


def trial_data(cfg: TrialConfig, split: str | os.PathLike | None = None) -> DataBundle:
    """The data of a trial config, with the image channels its model takes.

    Args:
        cfg: the trial config (its ``data`` section and ``seed`` decide the split).
        split: a split file written by ``DataBundle.save_split`` (a sweep's shared split), or None
            to draw the split from the seed.

    Returns:
        The train/val/test loaders and the data's facts (``DataBundle``).
    """
    return build_data(cfg.data, cfg.seed, split=split, channels=model_in_channels(cfg.model.name))


def example_input(data: DataBundle) -> torch.Tensor:
    """A zero batch of one image of the data's shape (what tracing, MAC counting and surgery take).

    Args:
        data: the trial's data.

    Returns:
        A ``(1, C, H, W)`` tensor of zeros.
    """
    return torch.zeros(1, *data.input_shape)


def teacher_importance(cfg: TrialConfig, teacher: nn.Module, data: DataBundle, metric: str,
                       device: torch.device) -> ImportanceScores:
    """Scores of ``metric`` on the teacher, over the first ``cfg.prune.importance_batches`` batches
    of the train loader reshuffled from ``cfg.seed``, so that shared and per-trial computation agree.

    Args:
        cfg: the trial config (seed and number of batches).
        teacher: the dense model to score.
        data: the trial's data (:func:`trial_data`).
        metric: a name from ``kpid_core.engine.importance.METRICS``.
        device: where to run the teacher.

    Returns:
        One score tensor per channel group.
    """
    from kpid_core.engine.importance import compute_importance

    gen = getattr(data.train.sampler, "generator", None)
    if gen is not None:
        gen.manual_seed(cfg.seed)
    return compute_importance(teacher, example_input(data).to(device), metric, loader=data.train,
                              n_batches=cfg.prune.importance_batches, seed=cfg.seed, device=device)


def prepare_shared(cfg: Any, out_dir: str | os.PathLike, metrics: list[str] | None = None) -> SharedArtifacts:
    """Compute once what every trial of a sweep shares, as files under ``out_dir``.

    Args:
        cfg: the sweep's base trial config (a TrialConfig or a nested dict).
        out_dir: the directory to write (created); importance files already there are reused.
        metrics: importance metrics to score (one file each); default ``[cfg.prune.metric]``.

    Returns:
        The paths of the data split, the teacher's weights and each importance file, with the
        teacher's test accuracy (also recorded in ``out_dir/shared.json``).
    """
    cfg = TrialConfig.coerce(cfg)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    data = trial_data(cfg)
    split = data.save_split(out / "split.json")
    teacher = get_teacher(cfg, data, device=device)
    tpath = out / "teacher.pt"
    atomic_save(cpu_state_dict(teacher.model), tpath)
    atomic_write_text(out / "teacher.json", json.dumps({
        "accuracy": teacher.accuracy, "model": cfg.model.name,
        "kwargs": model_kwargs(cfg, data.input_shape[0]), "source": teacher.source}))
    imp: dict[str, Path] = {}
    for metric in metrics or [cfg.prune.metric]:
        cfg_m = cfg.with_overrides({"prune.metric": metric})  # validates the metric name
        path = out / "importance" / f"{metric}.pt"
        if not (path.is_file() and _scores_fit(_load_scores(path), cfg_m)):  # absent, or over other batches
            teacher_importance(cfg_m, teacher.model, data, metric, device).save(path)
        imp[metric] = path
    shared = SharedArtifacts(out, split, tpath, float(teacher.accuracy or 0.0), imp)
    atomic_write_text(out / "shared.json", json.dumps(shared.to_dict(), indent=1))
    return shared


def load_teacher(cfg: TrialConfig, data: DataBundle, shared: SharedArtifacts | None,
                 device: torch.device) -> Teacher:
    """The trial's teacher: the sweep's shared weights when given, else :func:`~kpid_core.training.teacher.get_teacher`
    (trained, cached, from a checkpoint or pretrained, as ``cfg.teacher`` says).

    Args:
        cfg: the trial config (model and teacher sections).
        data: the trial's data (its classes and input channels shape the model).
        shared: the sweep's artifacts, or None.
        device: where the teacher is put, in eval mode.

    Returns:
        The teacher model with its test accuracy and where it came from.
    """
    if shared is None:
        return get_teacher(cfg, data, device=device)
    model = build_model(cfg.model.name, num_classes=data.num_classes, **model_kwargs(cfg, data.input_shape[0]))
    load_state_dict_file(shared.teacher, model, what="shared teacher")
    return Teacher(model.to(device).eval(), shared.teacher_accuracy, shared.teacher, "shared")


def shared_scores(cfg: TrialConfig, shared: SharedArtifacts | None) -> ImportanceScores | None:
    """The sweep's shared scores of the trial's metric, if they were computed over as many batches as
    this trial asks for; None otherwise (a sweep that varies ``prune.importance_batches``), and the
    trial scores its teacher itself. The seed is not compared: shared artifacts (teacher, split,
    scores) are the base config's whatever seed a trial draws.

    Args:
        cfg: the trial config (metric and number of batches).
        shared: the sweep's artifacts, or None.

    Returns:
        The scores, or None when there are none that answer ``cfg``.
    """
    if shared is None or cfg.prune.metric not in shared.importance:
        return None
    scores = _load_scores(shared.importance[cfg.prune.metric])
    return scores if _scores_fit(scores, cfg) else None


def _load_scores(path: Path):
    """An importance file (a corrupt one raises SpecError naming it)."""
    from kpid_core.engine.importance import ImportanceScores

    return ImportanceScores.load(path)


def _scores_fit(scores: Any, cfg: TrialConfig) -> bool:
    """Whether stored ``scores`` answer ``cfg``: the same metric over as many batches (files written
    without the batch count are trusted)."""
    made = scores.meta.get("n_batches", cfg.prune.importance_batches)
    return scores.metric == cfg.prune.metric and made == cfg.prune.importance_batches

