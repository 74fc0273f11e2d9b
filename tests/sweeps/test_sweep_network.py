"""What the product's local cluster exposes to the network (docs/sweeps.md, "Security and noise").

The cluster is started by ``sweeps.cluster.init_ray(None)`` in a child process, exactly as
``sweeps/run.py`` starts it, with Ray's token authentication on (its token in a temporary HOME; the
rest of the suite turns authentication off). The test lists the listening sockets of that process and
of every process it started (GCS, raylet, agents, workers) and dials them from outside.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from sweep_helpers import SHORT_TMP

from sweeps.cluster import LOCAL_ONLY_ENV

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

_CLUSTER = (
    "import sys; sys.path.insert(0, sys.argv[1])\n"
    "import ray\n"
    "from sweeps.cluster import init_ray\n"
    "init_ray(None, num_cpus=1, temp_dir=sys.argv[2])\n"
    "ray.get(ray.remote(num_cpus=1)(lambda: 1).remote())  # a worker process with its own gRPC port\n"
    "print(ray.get_runtime_context().gcs_address, flush=True)\n"
    "sys.stdin.read()\n"
    "ray.shutdown()\n"
)
_CLIENT = "import sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); print('CONNECTED')"


def _listening(pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of ``pid`` and its descendants."""
    root = psutil.Process(pid)
    out = []
    for p in [root, *root.children(recursive=True)]:
        try:
            conns = p.net_connections(kind="inet")
            name = p.name()
        except psutil.Error:  # a short-lived helper that has gone
            continue
        out += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def _is_loopback(ip: str) -> bool:
    return ip.removeprefix("::ffff:") in ("127.0.0.1", "::1")


def _external_ips() -> list[str]:
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def _refused(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=2):
            return False
    except OSError:
        return True


def test_local_cluster_listens_on_loopback_only_and_keeps_token_auth(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("RAY_AUTH_MODE", None)  # the product's default: Ray's token authentication on
    temp_dir = tempfile.mkdtemp(prefix="n", dir=SHORT_TMP)
    proc = subprocess.Popen([sys.executable, "-c", _CLUSTER, str(REPO), temp_dir], env=env, cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        gcs = proc.stdout.readline().strip()
        assert gcs, "the cluster did not start"
        socks = _listening(proc.pid)
        names = {n for n, _, _ in socks}
        assert {"gcs_server", "raylet"} <= names, socks
        assert [s for s in socks if not _is_loopback(s[1])] == [], "servers reachable from other hosts"
        for ip in _external_ips():  # dialling the machine's own external address finds nothing
            assert all(_refused(ip, port) for _, _, port in socks), ip
        assert gcs.startswith("127.0.0.1:")

        # token authentication stays on: a client with the wrong token is refused, the right one connects
        # a client must set the switch too, or Ray rewrites 127.0.0.1 to the external address
        bare = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": str(tmp_path), LOCAL_ONLY_ENV: "0",
                "RAY_AUTH_MODE": "token"}
        # (3 connection attempts, ~1 s apart, instead of Ray's 20: a refused client fails in seconds)
        wrong = subprocess.run([sys.executable, "-c", _CLIENT, gcs], check=False, capture_output=True, text=True, timeout=180,
                               env={**bare, "RAY_AUTH_TOKEN": "0" * 64, "RAY_NUM_REDIS_GET_RETRIES": "3"})
        assert wrong.returncode != 0 and "CONNECTED" not in wrong.stdout
        assert "ConnectionError" in wrong.stderr or "Authentication" in wrong.stderr, wrong.stderr[-500:]
        right = subprocess.run([sys.executable, "-c", _CLIENT, gcs], check=False, capture_output=True, text=True, timeout=180,
                               env={**bare, "HOME": str(home)})
        assert "CONNECTED" in right.stdout, right.stderr[-500:]
    finally:
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
