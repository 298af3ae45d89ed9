import pytest
import torch

from droppick.data import make_fake_fashion_mnist

# Tests are tiny; one thread keeps them fast and bit-reproducible on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fake_fashion(tmp_path_factory):
    """A small learnable dataset in Fashion-MNIST's IDX format (240 train, 80 test images)."""
    return make_fake_fashion_mnist(tmp_path_factory.mktemp("fashion"), n_train=240, n_test=80, seed=0)
