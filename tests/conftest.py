"""Suite-wide isolation: nothing a test runs writes into HOME (matplotlib, Jupyter, Ray, torch hub)."""

import os
import tempfile

_SANDBOX = tempfile.mkdtemp(prefix="kpid-tests-")
for var, sub in {
    "MPLCONFIGDIR": "mpl",
    "IPYTHONDIR": "ipython",
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "TORCH_HOME": "torch",
    "KPID_CACHE_DIR": "kpid-cache",
}.items():
    path = os.path.join(_SANDBOX, sub)
    os.makedirs(path, exist_ok=True)
    os.environ.setdefault(var, path)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import torch

torch.set_num_threads(1)  # 2 cores shared with Ray workers; oversubscription makes the suite slower
