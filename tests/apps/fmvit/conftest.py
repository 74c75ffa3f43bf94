"""One torch thread for the FMViT tests: on the shared 2-core CI machine, small CPU convolutions run
faster and steadier single-threaded than with threads fighting over cores."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
