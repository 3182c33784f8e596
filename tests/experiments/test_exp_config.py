"""Every .gin file parses into a valid ExperimentConfig; CLI overrides; errors name the field."""

import glob
import os

import gin
import pytest

from experiments.common.config import ExperimentConfig, parse_config, split_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIN_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.gin"), recursive=True))
# configs of the image-classification trainer (experiments.cifar); the loss-paper studies
# (configs/<study>/) have their own selectors and are parsed by their own tests
TRAINER_DIRS = ("cifar10", "cifar100", "digits", "fashion_mnist")
RUN_FILES = [f for f in GIN_FILES if not os.path.basename(f).startswith("base")
             and os.path.relpath(f, os.path.join(ROOT, "configs")).split(os.sep)[0] in TRAINER_DIRS]


def test_config_files_exist():
    names = {os.path.relpath(f, ROOT) for f in RUN_FILES}
    for ds in ("digits",):
        for o in ("sgd", "sam", "asam", "aace_sam", "gsam", "saf", "mesa"):
            assert f"configs/{ds}/{o}.gin" in names
    for ds in ("cifar10", "cifar100"):
        for model in ("wrn28_10", "pyramidnet272"):
            for o in ("sgd", "sam", "asam", "aace_sam", "saf", "mesa"):
                sub = "" if model == "wrn28_10" else model + "/"
                assert f"configs/{ds}/{sub}{o}.gin" in names, (ds, model, o)
    assert any("fashion_mnist" in n for n in names)


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_gin_file_parses(path):
    gin.clear_config()
    cfg = parse_config([path])
    gin.clear_config()
    assert isinstance(cfg, ExperimentConfig)
    with open(path) as f:
        head = f.read().split("\n")
    # Documentation contract: the command, the runtimes and the target come first.
    assert head[0].startswith("# python -m experiments.cifar --config configs/")
    assert os.path.relpath(path, ROOT) in head[0]
    text = "\n".join(head[:12]).lower()
    assert "runtime" in text and "cpu" in text and "h100" in text and "target" in text
    # The optimizer named by the file is the one configured.
    stem = os.path.splitext(os.path.basename(path))[0]
    assert cfg.optim.name == stem


def test_overrides_become_bindings():
    b, rest = split_overrides(["--config.optim.name=sam", "--config.train.epochs=3", "--workdir", "w",
                               "--config.optim.step_milestones=(0.5,)"])
    assert b == ["optim.name = 'sam'", "train.epochs = 3", "optim.step_milestones = (0.5,)"]
    assert rest == ["--workdir", "w"]
    cfg = parse_config([os.path.join(ROOT, "configs/digits/sgd.gin")], b)
    assert cfg.optim.name == "sam" and cfg.train.epochs == 3 and cfg.optim.step_milestones == (0.5,)
    assert cfg.data.dataset == "digits" and cfg.data.crop_pad == 1  # from the included base.gin


@pytest.mark.parametrize("binding, words", [
    ("optim.bogus = 1", ["optim", "bogus"]),
    ("optim.name = 'adamw'", ["optim.name"]),
    ("train.epochs = 'ten'", ["train.epochs"]),
    ("data.batch_size = 0", ["data.batch_size"]),
    ("optim.group_size = 8", ["optim.group_size"]),  # m-sharpness with sgd
    ("model.name = 'vit'", ["model.name"]),
])
def test_bad_values_name_the_field(binding, words):
    with pytest.raises((ValueError, TypeError)) as e:
        parse_config([], [binding])
    for w in words:
        assert w in str(e.value)


def test_malformed_file_names_the_file(tmp_path):
    p = tmp_path / "bad.gin"
    p.write_text("optim.step_milestones = (0.3, 0.6\n")
    with pytest.raises(ValueError, match="bad.gin"):
        parse_config([str(p)])
    with pytest.raises(ValueError, match="missing.gin"):
        parse_config([str(tmp_path / "missing.gin")])
