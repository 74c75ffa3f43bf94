"""BiFormer app: importing it registers biformer_{tiny,small,base,mini} with timm."""

from apps.biformer import model as _model  # noqa: F401  (timm registration)
