import os

import pytest
import torch

from droppick.data.in_memory import find_fashion_mnist, make_fake_fashion_mnist

# Tests are tiny; one thread keeps them fast and bit-reproducible on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fake_fashion(tmp_path_factory):
    """A small learnable dataset in Fashion-MNIST's IDX format (240 train, 80 test images)."""
    return make_fake_fashion_mnist(tmp_path_factory.mktemp("fashion"), n_train=240, n_test=80, seed=0)


@pytest.fixture(scope="session")
def real_fashion_dir():
    """The real Fashion-MNIST; skipped when absent, but a failure when DROPPICK_REQUIRE_DATA=1 (CI)."""
    try:
        return find_fashion_mnist()
    except FileNotFoundError as err:
        if os.environ.get("DROPPICK_REQUIRE_DATA") == "1":
            pytest.fail(f"DROPPICK_REQUIRE_DATA=1 but the real data is missing: {err}")
        pytest.skip(str(err))
