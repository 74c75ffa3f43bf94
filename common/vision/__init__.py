"""Image classification shared by the vision apps (biformer, fmvit, bivit): data, Lightning module,
export helpers and predict. Apps add only their model and a short config (see configs/vision/)."""
