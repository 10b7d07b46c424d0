
import pytest
import torch

# One thread: the tests use small tensors, where thread barriers cost more than they give,
# and a loaded machine makes a spinning second thread very slow.
torch.set_num_threads(1)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Szekely's energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic)."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
