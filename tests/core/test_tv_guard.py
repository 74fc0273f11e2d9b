"""The torchvision guard: torchvision imports on this CPU torch and the guard is idempotent."""

import subprocess
import sys


def test_torchvision_imports_in_a_fresh_process_through_the_guard():
    code = (
        "from kpid_core._tv import torchvision, EXTENSION_LOADED\n"
        "m = torchvision.models.get_model('mobilenet_v3_small', weights=None, num_classes=3)\n"
        "w = torchvision.models.get_model_weights('resnet50').IMAGENET1K_V1\n"
        "print(type(m).__name__, w.meta['_ops'], EXTENSION_LOADED)\n"
    )
    out = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    name, ops, _ = out.stdout.split()
    assert name == "MobileNetV3" and float(ops) == 4.089


def test_guard_defines_schemas_only_when_missing():
    from kpid_core import _tv

    before = _tv._LIB
    _tv._define_missing_schemas()  # every schema exists now (real or ours): must not register again
    assert _tv._LIB is before
    assert _tv._op_exists("nms") and _tv._op_exists("qnms")
