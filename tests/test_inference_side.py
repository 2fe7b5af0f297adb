"""The inference side stands alone and importing the library changes no process-wide setting: `EETModel`
loads without Lightning or a training module; denormal flushing, the albumentations variable and the
warnings filter come from `configure_process`, which every console script calls first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import eet_lightning
from eet_lightning.cli import evaluate, export, fit, prepare, transfer

TRAINING_MODULES = (
    "pytorch_lightning",
    "lightning_fabric",
    "eet_lightning.base",
    "eet_lightning.stage1",
    "eet_lightning.stage2",
    "eet_lightning.callbacks",
)

# Whether this thread flushes denormals: the smallest denormal (bits 0x1, made without a float conversion)
# doubled stays non-zero unless flushed. Several threads: one share of the tensor each.
_PROBE = """
import torch
def flushed(n=1):
    tiny = torch.ones(n, dtype=torch.int32).view(torch.float32)
    return [bool(v == 0) for v in (tiny * 2.0)]
"""


def _run(code: str, threads: int = 1, **names: object) -> dict:
    """Run ``code`` in a fresh interpreter (without NO_ALBUMENTATIONS_UPDATE, with ``threads`` torch
    threads, ``names`` defined); it prints one JSON line, returned here."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_ALBUMENTATIONS_UPDATE", "PYTHONWARNINGS")}
    env["OMP_NUM_THREADS"] = str(threads)
    script = "".join(f"{k} = {v!r}\n" for k, v in names.items()) + _PROBE + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_eet_model_loads_no_training_module_and_sets_nothing() -> None:
    out = _run(
        """
        import json, os, sys, warnings
        filters = list(warnings.filters)
        import eet_lightning.model
        from eet_lightning import EETModel
        print(json.dumps({
            "loaded": [m for m in TRAINING_MODULES if m in sys.modules],
            "model_is_eet_model": EETModel is eet_lightning.model.EETModel,
            "env": os.environ.get("NO_ALBUMENTATIONS_UPDATE"),
            "filters_changed": list(warnings.filters) != filters,
            "flushed": flushed()[0],
        }))
        """,
        TRAINING_MODULES=TRAINING_MODULES,
    )
    assert out["loaded"] == []
    assert out["model_is_eet_model"]
    assert out["env"] is None and not out["filters_changed"]
    assert not out["flushed"]  # importing the library leaves denormals alone


def test_training_names_still_come_from_the_package() -> None:
    from eet_lightning.base import LossWeights
    from eet_lightning.stage1 import Stage1Module
    from eet_lightning.stage2 import Stage2Module

    assert eet_lightning.Stage1Module is Stage1Module and eet_lightning.Stage2Module is Stage2Module
    assert eet_lightning.LossWeights is LossWeights
    assert set(eet_lightning.__all__) <= set(dir(eet_lightning))
    with pytest.raises(AttributeError, match="no attribute 'Stage3Module'"):
        eet_lightning.Stage3Module  # noqa: B018


def test_configure_process_sets_everything_once_in_every_thread() -> None:
    out = _run(
        """
        import json, os, warnings
        from eet_lightning.runtime import configure_process
        torch.set_num_threads(2)
        first = configure_process()
        filters = list(warnings.filters)
        second = configure_process()
        print(json.dumps({
            "returned": [first, second],
            "env": os.environ.get("NO_ALBUMENTATIONS_UPDATE"),
            "eval_filter": any(f[0] == "ignore" and f[1] is not None and "eval mode" in f[1].pattern
                               for f in warnings.filters),
            "filters_unchanged": list(warnings.filters) == filters,
            "flushed": flushed(4 * 2**16),
            "supported": torch.set_flush_denormal(True),
        }))
        """,
        threads=2,
    )
    assert out["env"] == "1" and out["eval_filter"] and out["filters_unchanged"]
    if not out["supported"]:
        pytest.skip("this CPU cannot flush denormals")
    assert out["returned"] == [True, True]
    assert all(out["flushed"]), "denormals survive in some of torch's threads"


def test_configure_process_warns_when_threads_started_before_it() -> None:
    out = _run(
        """
        import json, warnings
        torch.set_num_threads(2)
        (torch.randn(2**20) * 2).sum()  # starts torch's worker threads before the setting
        from eet_lightning.runtime import configure_process
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first, second = configure_process(), configure_process()
        print(json.dumps({"returned": [first, second], "warnings": [str(w.message) for w in caught],
                          "supported": torch.set_flush_denormal(True)}))
        """,
        threads=2,
    )
    if not out["supported"]:
        pytest.skip("this CPU cannot flush denormals")
    assert out["returned"] == [False, False]
    assert len(out["warnings"]) == 1 and "configure_process()" in out["warnings"][0]


def test_stage_modules_flush_denormals_for_library_users() -> None:
    out = _run(
        """
        import json
        from eet_lightning import ArchConfig, Stage1Module
        before = flushed()[0]
        Stage1Module(arch=ArchConfig(image_size=64, width=0.0625, num_identities=4, num_poses=3))
        print(json.dumps({"before": before, "after": flushed()[0], "supported": torch.set_flush_denormal(True)}))
        """
    )
    if not out["supported"]:
        pytest.skip("this CPU cannot flush denormals")
    assert (out["before"], out["after"]) == (False, True)


@pytest.mark.parametrize("cli", [fit, prepare, transfer, evaluate, export], ids=lambda m: m.__name__)
def test_each_console_script_configures_the_process_first(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    class Called(BaseException):
        pass

    def configure_process() -> bool:
        raise Called

    monkeypatch.setattr(cli, "configure_process", configure_process)
    with pytest.raises(Called):  # before anything else: "--help" would otherwise exit while parsing
        cli.main(["--help"])


def test_albumentations_never_asks_pypi() -> None:
    out = _run(
        """
        import json, os, sys
        from eet_lightning.datamodules.manifest import build_augmentation
        before = os.environ.get("NO_ALBUMENTATIONS_UPDATE")
        build_augmentation(mirror=True, color_jitter=0.0)
        print(json.dumps({"before": before, "env": os.environ.get("NO_ALBUMENTATIONS_UPDATE"),
                          "imported": "albumentations" in sys.modules}))
        """
    )
    assert out == {"before": None, "env": "1", "imported": True}
