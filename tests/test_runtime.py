"""eet_lightning.runtime: the allocator setting the command-line tools apply (process-wide, so each case
runs in its own interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# The commands tune the allocator with their modules loaded (importing eet_lightning no longer loads them):
# on a nearly empty heap, torch's 64-byte aligned blocks freed below a later small allocation are not reused.
SNIPPET = """
import torch
import eet_lightning.cli.fit
from eet_lightning.runtime import {call}
print({call}())
def faults():
    return int(open('/proc/self/stat').read().split()[9])  # minor page faults so far
counts = []
for _ in range(10):  # a 200 MB tensor made and freed again and again, as a training step does
    before = faults(); x = torch.empty(50_000_000); x.fill_(1.0); counts.append(faults() - before); del x
print(','.join(map(str, counts)))
"""


def _run(call: str, env: dict[str, str] | None = None) -> tuple[str, list[int]]:
    proc = subprocess.run(
        [sys.executable, "-c", SNIPPET.format(call=call)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    active, faults = proc.stdout.split()
    return active, [int(f) for f in faults.split(",")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_reuses_freed_memory() -> None:
    active, faults = _run("tune_cpu_allocator")
    assert active == "True"
    # 200 MB is ~49,000 pages of 4 KB: with the C allocator's defaults each new tensor faults on every
    # one of them; tuned, once the first few have been freed, later ones reuse their memory
    assert max(faults[-4:]) < 2_000, faults
    active, default_faults = _run("tune_for_cli", {"EET_DEFAULT_ALLOCATOR": "1"})
    assert active == "False" and min(default_faults) > 40_000, default_faults
    assert _run("tune_for_cli")[0] == "True"
