"""The library must never pull in the Kubernetes side."""

import subprocess
import sys


def test_import_opensora_core_does_not_import_kfp_or_kubernetes():
    code = (
        "import sys, opensora_core, opensora_core.models, opensora_core.config;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kfp', 'kubernetes')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
