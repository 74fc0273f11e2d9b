"""Light entry points stay light: the package root and its errors must not import torch; the model
registry reads torchvision only when it is needed, and the digits data are read and split without
scikit-learn."""

import subprocess
import sys
from pathlib import Path


def test_package_root_and_errors_do_not_import_torch_but_reexports_work():
    code = (
        "import sys, kpid_core, kpid_core.errors\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "from kpid_core import prune_to_budget, load_pruned, save_pruned\n"
        "assert 'torch' in sys.modules and callable(prune_to_budget)\n"
    )
    out = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_torchvision_and_scikit_learn_are_imported_only_when_needed():
    code = (
        "import sys, torch\n"
        "import kpid_core.models as m, kpid_core.trial\n"
        "from kpid_core.config import load_config\n"
        "from kpid_core.training.data import build_data, digits_arrays\n"
        "m.build_model('digits_resnet', num_classes=10); m.check_model_name('resnet20'); digits_arrays()\n"
        "build_data(load_config().data, 0)  # split with kpid_core.training.holdout, not scikit-learn\n"
        "assert 'torchvision' not in sys.modules and 'sklearn' not in sys.modules, 'imported eagerly'\n"
        # a model registered under a torchvision name before torchvision was read keeps that name
        "m.register('resnet18', 32)(lambda num_classes=10, **kw: torch.nn.Linear(1, num_classes))\n"
        "assert isinstance(m.build_model('resnet18'), torch.nn.Linear) and 'torchvision' not in sys.modules\n"
        # timm (which imports torchvision) first: through the guard, on this CPU-only torch too
        "assert type(m.build_model('timm:lcnet_050', num_classes=3)).__name__ == 'MobileNetV3'\n"
        "assert 'torchvision' in sys.modules\n"
        "assert type(m.build_model('mobilenet_v3_small', num_classes=3)).__name__ == 'MobileNetV3'\n"
        "assert isinstance(m.build_model('resnet18'), torch.nn.Linear)\n"
        "assert 'resnet50' in m.TORCHVISION_MODELS and 'vit_b_16' in m.TORCHVISION_REFUSED\n"
        "assert 'resnet50' in m.MODEL_NAMES and 'digits_resnet' in m.MODEL_NAMES\n"
    )
    out = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_checking_a_trial_config_or_a_sweep_file_imports_no_torch(tmp_path):
    """The sweep driver checks every trial a sweep file can make before it starts, in a process that never
    builds a model: every name a config holds (models built here, metrics, allocations, solvers, costs,
    data sets) is checked without torch, and the CLI's parser is built without it; a torchvision model's
    name is what imports it."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: t\nbase: {model: resnet20, dataset: fashion_mnist, epochs: 2}\n"
        "space: {metric: [taylor_sq, l1, sensitivity], budget: [0.3, 0.5], allocation: [knapsack, uniform],\n"
        "        prune.solver: [dp, greedy], prune.normalize: [none, cost], prune.cost: [macs, latency],\n"
        "        prune.round_to: [1, 8], data.augment: [small, none]}\n"
        "baselines: [{model: digits_resnet, width: match, budgets: [0.5]}, {model: resnet56, width: 0.5}]\n")
    code = (
        "import sys\n"
        "from kpid_core.config import load_config\n"
        "from kpid_core.errors import UnknownNameError\n"
        "from sweeps.space import load_sweep\n"
        f"spec = load_sweep({str(sweep)!r})\n"
        "cfg = load_config(overrides=['model=digits_resnet', 'metric=random', 'prune.cost=params'])\n"
        "try:\n"
        "    load_config(overrides=['metric=tayler'])\n"
        "except UnknownNameError as e:\n"
        "    assert 'taylor' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('a misspelt metric was accepted')\n"
        "from kpid_core.__main__ import build_parser\n"
        "build_parser()  # the CLI's --help and its argument errors need no torch either\n"
        "assert 'torch' not in sys.modules, 'torch imported to check a config'\n"
        "load_config(overrides=['model=mobilenet_v3_small'])\n"
        "assert 'torchvision' in sys.modules\n"
    )
    out = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_config_lists_the_metrics_the_importance_registry_has():
    from kpid_core import choices
    from kpid_core.engine.importance import METRICS

    assert list(choices.METRICS) == METRICS
