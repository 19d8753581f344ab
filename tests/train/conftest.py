"""Fixtures for the training tests: the offline smoke assets (tiny XLM-R, synthetic data)."""

from __future__ import annotations

import os

import pytest

# The tests must never reach for the hub, even where there is network. Set before huggingface_hub
# is imported: it reads these once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """Smoke assets plus a ``data`` dict (as a grid's [data] table) that reads them."""
    from transferstats.train.smoke import make_smoke_assets

    root = tmp_path_factory.mktemp("smoke")
    assets = make_smoke_assets(root)
    data = {"data_dir": assets["data_dir"], "cache_dir": str(root / "cache"), "hub": False}
    # Fast settings for the tiny model: well under a second of training per phase.
    hyperparameters = {"batch_size": 8, "epochs": 1, "learning_rate": 1e-3, "eval_batch_size": 32}
    return {**assets, "root": root, "data": data, "hp": hyperparameters}


