"""The benchmarks' CUDA-graphed wrapper replays what the op computes (GPU lane)."""

import pytest
import torch

from benchmarks.timing import cuda_graphed

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_op_matches_the_op_forward_and_backward():
    def op(a, scale, b):
        return (a * scale).sin() @ b

    a, b = (torch.randn(16, 16, device="cuda", requires_grad=True) for _ in range(2))
    graphed = cuda_graphed(op, (0, 2))
    for _ in range(3):  # captured at the first call, replayed after: new values each time
        a.data.normal_(), b.data.normal_()
        a.grad = b.grad = None
        op(a, 2.0, b).sum().backward()
        want = (a.grad.clone(), b.grad.clone())
        a.grad = b.grad = None
        out = graphed(a, 2.0, b)
        torch.testing.assert_close(out, op(a, 2.0, b), rtol=1e-5, atol=1e-5)
        out.sum().backward()
        torch.testing.assert_close((a.grad, b.grad), want, rtol=1e-5, atol=1e-5)
