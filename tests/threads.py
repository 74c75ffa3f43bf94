"""One intra-op thread for test folders that opt in (their conftest imports `one_thread`): their tests use small
tensors, and on a shared, busy CPU OpenMP threads that spin for each other cost far more than they save."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
