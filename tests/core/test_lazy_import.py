"""Light entry points stay light: the package root and its errors must not import torch."""

import subprocess
import sys


def test_package_root_and_errors_do_not_import_torch_but_reexports_work():
    code = (
        "import sys, kpid_core, kpid_core.errors\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "from kpid_core import prune_to_budget, load_pruned, save_pruned\n"
        "assert 'torch' in sys.modules and callable(prune_to_budget)\n"
    )
    out = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
