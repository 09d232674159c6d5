"""Settings and fixtures shared by every test."""

from pathlib import Path

import pytest
import torch

from data.synthetic import generate_dataset

# The tests run small tensors, for which one thread beats two: no fork/join per operation, and no stall when
# another process (a DataLoader worker, a torchrun rank) holds the second core.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA device: skipped without one (scripts/gpu_check.sh runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def market_people(tmp_path_factory) -> Path:
    """The suite's shared synthetic dataset: 4 identities x 3 poses of Market-like people (128x64), exact flow
    files included, generated once per test session. Tests must not write into it."""
    root = tmp_path_factory.mktemp("market_people")
    generate_dataset(root, style="market", identities=4, poses=3, seed=3)
    return root
