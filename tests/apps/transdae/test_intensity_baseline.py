"""The intensity rule: on pixels whose classes are intensity bands it recovers the bands exactly."""

from __future__ import annotations

import numpy as np

from apps.transdae.intensity_baseline import intensity_rule


def test_rule_recovers_intensity_bands():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 16, 16))
    labels = np.digitize(images, [0.25, 0.5, 0.75])  # classes 0..3 by quarter of the intensity range
    rule = intensity_rule(images, labels, num_classes=4, bins=8)
    np.testing.assert_array_equal(rule, [0, 0, 1, 1, 2, 2, 3, 3])
