"""Methods as plug-ins: `eet-fit` trains any `TransferMethod` named by class_path (here one defined in a
test-side file, `plugin_method.py`), its options come from the module's signature, the other commands load
its checkpoint through the method table, and configs that do not fit the method are refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import plugin_method  # noqa: F401  (registers the method "plugin")
from bad_input import assert_one_clear_error, run_in_process
from eet_lightning.checkpoint_io import read_checkpoint
from eet_lightning.cli.evaluate import main as evaluate_main
from eet_lightning.cli.export import main as export_main
from eet_lightning.cli.fit import build_parser, main, resolve_config_names
from eet_lightning.methods import METHODS, load_transfer_model
from eet_lightning.stage1 import Stage1Module
from eet_lightning.stage2 import Stage2Module


def _plugin_config(tiny_config: Path, tmp_path: Path, **stage1) -> Path:
    cfg = yaml.safe_load(tiny_config.read_text())
    for key in ("model", "stage2"):
        cfg.pop(key)
    cfg["stage1"] = {
        "class_path": "plugin_method.PluginMethod",
        "max_epochs": 2,
        "limit_train_batches": 2,
        "width": 8,
        "lr": 1.0e-2,
        **stage1,
    }
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("plugin")
    config = _plugin_config(tiny_config, tmp)
    run_dir = tmp / "run"
    assert main(["--config", str(config), "--run_dir", str(run_dir), "--stage1.lambda_swap", "2.5"]) == 0
    return config, run_dir


def test_a_method_from_outside_the_library_trains_through_eet_fit(plugin_run: tuple[Path, Path]) -> None:
    config, run_dir = plugin_run
    ckpt = read_checkpoint(run_dir / "stage1" / "last.ckpt", 1, "test", method="plugin")
    assert ckpt["eet_method"] == "plugin"
    hp = ckpt["hyper_parameters"]
    # declared once, in the module's signature: the config's value, the command line's, the data's
    assert hp["width"] == 8 and hp["lambda_swap"] == 2.5 and hp["image_size"] == 64 and len(hp["aus"]) == 12
    assert not (run_dir / "stage2").exists()  # one stage: no stage 2 follows
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["stage1"]["class_path"] == "plugin_method.PluginMethod" and "model" not in saved
    assert (run_dir / "test_grid.png").stat().st_size > 0 and list((run_dir / "samples").glob("stage1-*.png"))
    assert "train/swap" in (run_dir / "logs" / "stage1" / "version_0" / "metrics.csv").read_text()


def test_its_checkpoint_loads_transfers_evaluates_and_exports(
    plugin_run: tuple[Path, Path], tmp_path: Path
) -> None:
    config, run_dir = plugin_run
    final = run_dir / "stage1" / "last.ckpt"
    model = load_transfer_model(final)
    assert type(model).__name__ == "PluginModel" and not model.training
    a = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out_a, out_b = model.transfer(a, a[::-1].copy())
    assert out_a.shape == a.shape and out_a.dtype == np.uint8
    # labels in place of reading the source, and strength 0 keeps the own expression
    labels = {"aus": torch.full((2, 12), 3.0)}
    t = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(model.swap(t, t.flip(0), labels), model.net(t, torch.full((2, 12), 0.6)))
    torch.testing.assert_close(model.transfer(t, t.flip(0), strength=0.0)[0], model.reconstruct(t))
    with pytest.raises(ValueError, match="selective transfer"):
        model.transfer(t, t, aus=[12])
    # eet-evaluate: the true-swap protocol with the method's own name in the table
    out = tmp_path / "eval"
    rc = evaluate_main(
        [
            "--ckpt",
            str(final),
            "--config",
            str(config),
            "--out",
            str(out),
            "--protocol",
            "groundtruth",
            "--pairs",
            "4",
            "--no-progress",
        ]
    )
    assert rc == 0
    res = yaml.safe_load((out / "results.json").read_text())
    assert res["method"] == "plugin" and res["condition"] == "labels"
    assert set(res["groundtruth"]["whole_l1"]) >= {"target", "swapped", "target_self"}
    # eet-export keeps the method's parts; the export loads to the same outputs
    weights = tmp_path / "plugin.safetensors"
    assert export_main(["--ckpt", str(final), "--out", str(weights)]) == 0
    exported = load_transfer_model(weights)
    torch.testing.assert_close(exported.swap(t, t.flip(0)), model.swap(t, t.flip(0)))


def test_options_come_from_the_stage_classes(tiny_config: Path) -> None:
    argv = resolve_config_names(["--config", str(tiny_config)])
    parser = build_parser(argv)
    assert parser.stage_classes == [Stage1Module, Stage2Module]  # no class_path: EET's two stages
    cfg = parser.parse_args(argv + ["--stage2.train_feature_discriminators", "true"])
    assert cfg.stage1.class_path == "eet_lightning.stage1.Stage1Module"
    assert cfg.stage2.train_feature_discriminators is True and cfg.model.variant == "eet"
    assert set(METHODS) >= {"eet", "ganimation", "stargan", "plugin"}


@pytest.mark.parametrize(
    ("change", "extra", "needles"),
    [
        ({"stage2": {"max_epochs": 1}}, [], ["stage2", "1 stage"]),
        ({}, ["--stage", "2"], ["--stage", "1..1"]),
        ({"model": {"variant": "eet"}}, [], ["model"]),
        ({"stage1": {"class_path": "plugin_method.NoSuchClass"}}, [], ["stage1.class_path", "NoSuchClass"]),
        ({"stage1": {"class_path": "eet_lightning.nets.ArchConfig"}}, [], ["not a training stage"]),
        ({}, ["--stage1.lr", "0"], ["stage1.lr", "positive"]),
        ({}, ["--stage1.no_such_option", "1"], ["no_such_option"]),
    ],
    ids=[
        "stage2-for-one-stage",
        "stage-out-of-range",
        "model-section",
        "no-such-class",
        "not-a-stage",
        "lr",
        "unknown",
    ],
)
def test_configs_that_do_not_fit_the_method_are_refused(
    tiny_config: Path, tmp_path: Path, capsys, change: dict, extra: list[str], needles: list[str]
) -> None:
    config = _plugin_config(tiny_config, tmp_path)
    cfg = yaml.safe_load(config.read_text())
    for key, value in change.items():
        cfg[key] = {**cfg.get(key, {}), **value} if key == "stage1" else value
    config.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    rc, _, err = run_in_process(main, ["--config", str(config), "--run_dir", str(run_dir), *extra], capsys)
    assert_one_clear_error("eet-fit", rc, err, *needles)
    assert not run_dir.exists()


def test_checkpoints_from_before_methods_had_names_load_as_eet(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = torch.load(tiny_run / "stage2" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["eet_method"] == "eet"
    del ckpt["eet_method"]  # as every checkpoint written before this field existed
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    model = load_transfer_model(old)
    assert type(model).__name__ == "EETModel" and model.method == "eet"
    # and a stage-1 file is refused as what it is: not the final stage
    with pytest.raises(ValueError, match="expected a stage-2 checkpoint"):
        load_transfer_model(tiny_run / "stage1" / "last.ckpt")


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (Path(__file__).parent.parent / "configs").glob("*.yaml"))
)
def test_every_bundled_config_reads_as_its_method(name: str) -> None:
    argv = resolve_config_names(["--config", name])
    parser = build_parser(argv)
    raw = yaml.safe_load(Path(argv[1]).read_text())
    extra = ["--data.root", "/data"] if "root" in (raw["data"].get("init_args") or {}) else []
    cfg = parser.parse_args(argv + extra)  # parsed and type-checked, not instantiated
    expected = {"ganimation": "GANimation", "stargan": "StarGAN"}.get(name.split("_")[0])
    names = [c.__name__ for c in parser.stage_classes]
    assert names == ([expected] if expected else ["Stage1Module", "Stage2Module"])
    plain = cfg.as_dict()
    for k, cls in enumerate(parser.stage_classes, 1):
        section = {key: v for key, v in plain[f"stage{k}"].items() if key != "class_path"}
        shared = {key: plain["model"][key] for key in cls.shared_hparams} if cls.shared_hparams else {}
        cls.check_init_args({**shared, **section}, f"stage{k}")
