"""A predictor's own options come from the predict config's top-level keys of the same names, only when set."""

from __future__ import annotations

import functools

from omegaconf import OmegaConf

from common.pipeline.predict import predictor_options


def predictor(model, input_path, out_dir, spec, fixed=None, scale: float = 1.0):
    return {}


def test_options_are_the_predictors_extra_parameters_that_are_set():
    cfg = OmegaConf.create({"input": "x.nii.gz", "fixed": "f.nii.gz", "scale": None, "voice": "v.safetensors"})
    assert predictor_options(functools.partial(predictor), cfg) == {"fixed": "f.nii.gz"}  # voice: not its option
    assert predictor_options(predictor, OmegaConf.create({"scale": 2.0})) == {"scale": 2.0}
    assert predictor_options(lambda model, input_path, out_dir, spec: {}, cfg) == {}
