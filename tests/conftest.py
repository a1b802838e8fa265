"""Shared fixtures: small synthetic datasets written once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from vpr_core.synthetic import SynthConfig, write_synthetic

SMALL = dict(places=24, queries=24, image_size=(64, 80), seed=0)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Pittsburgh layout (train/val/test .mat files)."""
    out = tmp_path_factory.mktemp("synth") / "pitts"
    write_synthetic(SynthConfig(out=out, **SMALL))
    return out


@pytest.fixture(scope="session")
def synth_folder_root(tmp_path_factory) -> Path:
    """The same images as `synth_root`, in the @UTM@ folder layout."""
    out = tmp_path_factory.mktemp("synth") / "folder"
    write_synthetic(SynthConfig(out=out, layout="folder", **SMALL))
    return out
