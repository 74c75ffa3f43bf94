"""NestedMorph learns to register: a tiny network (32^3) fitted by the app's own loss (LNCC + Grad3d) to one
synthetic MNI152 pair aligns the images: the NCC loss falls and SSIM(warped, fixed) rises above SSIM(moving,
fixed), without folding. (Measured, seed 0, 30 Adam steps at 3e-3: SSIM 0.799 -> 0.817, NCC loss -0.649 ->
-0.705; the Dice of the warped tissue labels does not move yet: the field is still small.)"""

from __future__ import annotations

import lightning as L
import torch

from apps.nestedmorph.data import NestedMorphDataModule
from apps.nestedmorph.model import RegistrationNet
from apps.nestedmorph.module import NestedMorphModule

STEPS = 30
SSIM_GAIN = 0.01  # measured gain 0.018; a frozen identity gains 0 (SSIM of a near-zero flow equals the identity's)


def test_fits_one_pair(cubes_dir):
    L.seed_everything(0)
    dm = NestedMorphDataModule(data_dir=str(cubes_dir), size=32, val_pairs=1, test_pairs=1)
    dm.prepare_data()
    dm.setup("fit")
    pair = {k: (v[None] if torch.is_tensor(v) else torch.tensor([v])) for k, v in dm.datasets["val"][0].items()}
    model = RegistrationNet(size=32, dims=(8, 16, 32, 64), decoder_depth=1)
    module = NestedMorphModule(model, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    opt = module.optimizer_factory(model.parameters())
    nccs = []
    for _ in range(STEPS):
        loss, out = module.loss(pair)
        nccs.append(float(out["ncc"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    with torch.no_grad():
        metrics = module.pair_scores(pair)
    print({k: round(v, 3) for k, v in metrics.items()}, nccs[0], nccs[-1])
    assert nccs[-1] < nccs[0] - 0.01, nccs
    assert metrics["ssim"] > metrics["ssim_identity"] + SSIM_GAIN, metrics
    assert metrics["folding"] < 1.0, metrics
