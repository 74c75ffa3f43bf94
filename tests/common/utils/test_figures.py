from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
from PIL import Image

from common.utils.figures import save_figure


def test_the_backend_is_headless_and_save_figure_writes_and_closes(tmp_path):
    assert matplotlib.get_backend().lower() == "agg"
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "new" / "folder" / "plot.png", dpi=50)
    assert path == tmp_path / "new" / "folder" / "plot.png"
    assert Image.open(path).size == (100, 50)  # figsize x dpi
    assert fig.number not in plt.get_fignums()
