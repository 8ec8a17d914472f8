import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep tests deterministic and avoid oversubscription.
    torch.set_num_threads(2)
    yield
