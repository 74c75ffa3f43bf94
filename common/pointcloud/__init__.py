"""Point-cloud code shared by the point-cloud apps (risurconv first): sampling, grouping and interpolation in
plain PyTorch (no compiled extension), rotations, augmentations, file readers, the procedural shape set and the
real dataset layouts (ModelNet40, ScanObjectNN, ShapeNetPart)."""
