"""Stockformer's wavelet split of a window into low- and high-frequency parts (PyWavelets, one level).

The paper's `disentangle`: one-level DWT of each stock's return window (sym2), then the low-frequency
part is the inverse transform of (cA, 0) and the high-frequency part of (0, cD). Both steps are linear in
the window, so for a fixed length T each part is a T x T matrix applied along time. The matrices are
built here by running PyWavelets on the unit vectors; the model keeps them as buffers, so the split runs
inside the model (and inside its exported graph) and is exactly PyWavelets' result. Because the inverse
transform is linear and reconstructs perfectly, low + high = the window.
"""

from __future__ import annotations

import numpy as np
import pywt


def wavelet_split(x: np.ndarray, wavelet: str = "sym2", mode: str = "symmetric") -> tuple[np.ndarray, np.ndarray]:
    """Low and high parts of 1-D signals along the last axis, straight from PyWavelets."""
    x = np.asarray(x, dtype=np.float64)
    length = x.shape[-1]
    approx, detail = pywt.dwt(x, wavelet, mode=mode, axis=-1)
    low = pywt.idwt(approx, None, wavelet, mode=mode, axis=-1)[..., :length]
    high = pywt.idwt(None, detail, wavelet, mode=mode, axis=-1)[..., :length]
    return low, high


def wavelet_operators(length: int, wavelet: str = "sym2", mode: str = "symmetric") -> tuple[np.ndarray, np.ndarray]:
    """Matrices (low, high), each [length, length], with wavelet_split(x) == (low @ x, high @ x)."""
    if length < 2:
        raise ValueError(f"a wavelet split needs a window of at least 2 steps, got {length}")
    low, high = wavelet_split(np.eye(length), wavelet, mode)  # row j: the parts of unit vector e_j
    return low.T.astype(np.float32), high.T.astype(np.float32)
