"""`vpr_core.arguments`: one set of flags for both CLIs, help texts read from the configs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vpr_core.config import SGD_DEFAULTS, CommonConfig, CompressConfig, TrainConfig
from vpr_core.settings import default_of, shown
from vpr_core.settings import default_text as default

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_written_as_help_texts_write_them():
    assert (shown(1e-4), shown(2.5e-3), shown(5.0), shown(0.5)) == ("1e-4", "2.5e-3", "5", "0.5")
    assert shown((1, 32)) == "1 32" and shown(Path("cache")) == "./cache"
    assert default(TrainConfig, "lr") == "1e-4" and default(CommonConfig, "seed") == "123"
    assert default_of(CommonConfig, "workers") >= 1  # a default_factory is called
    assert default(CommonConfig, "workers") == "the CPUs, at most 4"  # what help says of it
    with pytest.raises(KeyError):
        default(TrainConfig, "no_such_field")


def help_text(capsys, *argv) -> str:
    """The help of `python -m orchestrator ARGV --help`, on one line."""
    from orchestrator.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_the_config_defaults(capsys):
    text = help_text(capsys, "train")
    for name in ("epochs", "batch_size", "lr", "margin", "num_negatives", "patience"):
        assert f"(default {default(TrainConfig, name)})" in text, name
    assert f"weight decay (SGD, AdamW) (default {shown(SGD_DEFAULTS['weight_decay'])})" in text
    assert f"(default {default(CommonConfig, 'cache_dir')})" in text
    text = help_text(capsys, "compress", "--resume", "x", "--method", "half")
    assert f"(default {default(CompressConfig, 'latency_batches')})" in text


def test_flags_given_and_not_given(monkeypatch):
    """A flag not given is absent (its config's default applies); the retrievals get
    RetrievalSettings' defaults."""
    from dashboards import cli, retrievals
    from orchestrator.cli import build_parser

    args = build_parser().parse_args(["sweep", "--cachePath", "c", "--fromscratch", "--nEpochs",
                                      "2", "--image-size", "8x8", "--json", "j", "--quiet"])
    assert (args.cache_dir, args.weights, args.epochs, args.image_size) == \
        ("c", "none", 2, "8x8")
    assert not hasattr(args, "seed") and not hasattr(args, "num_samples")
    seen = []

    def caught(settings):
        seen.append(settings)
        raise StopIteration  # nothing is drawn

    monkeypatch.setattr(retrievals, "retrievals", caught)
    for argv in (["--resume", "r"], ["--run", "r", "--nocuda", "--cacheBatchSize", "3",
                                     "--split", "test", "--ckpt", "best"]):
        with pytest.raises(StopIteration):
            cli.run_retrievals(cli.build_parser("retrievals").parse_args(
                ["retrievals", "--out", "o", *argv]))
    plain, given = seen
    assert (plain.split, plain.ckpt, plain.device, plain.cache_batch_size, plain.queries) == \
        ("val", "latest", "auto", 24, 8)
    assert (given.split, given.ckpt, given.device, given.cache_batch_size) == \
        ("test", "best", "cpu", 3)


def test_layers_import_downwards_only():
    """vpr_core.arguments brings no Ray/MLflow; the dashboards' parser no orchestrator (nor
    torch, but for the retrievals verb); sweep_cli brings no Ray/MLflow/Optuna and does not
    import orchestrator.cli."""
    code = (
        "import json, sys\n"
        "import dashboards.cli\n"
        "dashboards.cli.build_parser()\n"
        "first = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('orchestrator', 'ray', 'mlflow', 'optuna', 'torch'))\n"
        "import orchestrator.sweep_cli\n"
        "second = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('orchestrator', 'ray', 'mlflow', 'optuna'))\n"
        "print(json.dumps([first, second]))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    first, second = json.loads(done.stdout)
    assert first == []
    assert "orchestrator.cli" not in second and "orchestrator.sweep_cli" in second
    assert not [m for m in second if m.split(".")[0] != "orchestrator"]
