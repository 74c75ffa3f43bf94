"""The kernel lanes. Without CUDA the Triton kernels run under the interpreter (TRITON_INTERPRET=1, set by
tests/conftest.py before anything imports triton.language) at small sizes; with CUDA the same tests run
compiled, and the `gpu`-marked ones add real sizes.

`poison_empty` (autouse) fills every fresh `torch.empty*` buffer with NaN, so a kernel that reads memory it
never wrote fails its comparison instead of passing by luck (fla's tests/conftest.py does the same).
"""

from __future__ import annotations

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    def poisoned(make):
        def wrapper(*args, **kwargs):
            out = make(*args, **kwargs)
            if out.is_floating_point():
                out.fill_(float("nan"))
            return out

        return wrapper

    monkeypatch.setattr(torch, "empty", poisoned(torch.empty))
    monkeypatch.setattr(torch, "empty_like", poisoned(torch.empty_like))
    monkeypatch.setattr(torch.Tensor, "new_empty", poisoned(torch.Tensor.new_empty))
    yield


@pytest.fixture
def device():
    return DEVICE
