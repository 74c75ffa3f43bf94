"""One intra-op thread: these tests use small tensors, and on a shared, busy CPU OpenMP threads that spin for
each other cost far more than they save."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
