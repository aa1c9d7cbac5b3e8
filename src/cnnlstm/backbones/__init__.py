"""Per-frame CNNs and series CNNs, registered by name.

A 2-D backbone maps images ``(B, C, H, W)`` to feature maps ``(B, C', H', W')``; the model
wraps it in :class:`~cnnlstm.TimeDistributed` for clips. A 1-D backbone maps series
``(N, T, F)`` to ``(N, T, F')``: the ``(N, F, T)`` permutation that ``Conv1d`` wants lives
inside it and nowhere else, and its forward takes ``lengths`` so that padded steps change nothing.

- ``small`` (:mod:`.small`): the built-in 2-D CNN.
- ``conv1d`` (:mod:`.conv1d`): a plain, dilated or causal stack, optionally time-pooled.
- ``fcn``, ``resnet1d`` (:mod:`.series`), ``inception1d`` (:mod:`.inception`): the field's series CNNs (Wang et
  al. 2017's FCN and ResNet, with MLSTM-FCN's squeeze-and-excite as an option; InceptionTime's network).
- ``torchvision:NAME`` and ``timm:NAME`` (:mod:`.adapters`): those packages' models without their classifier;
  weights come from a local file only (``weights="path"``), nothing downloads.
"""

# registration order is the order the unknown-name message lists them in
from .small import SmallCNN  # isort: skip
from .conv1d import Conv1dBackbone  # isort: skip
from .series import FCN, ResNet1d  # isort: skip
from .inception import Inception1d  # isort: skip
from .build import build_backbone
from .registry import BACKBONES, load_weights, register_backbone, time_stride

__all__ = [
    "BACKBONES",
    "FCN",
    "Conv1dBackbone",
    "Inception1d",
    "ResNet1d",
    "SmallCNN",
    "build_backbone",
    "load_weights",
    "register_backbone",
    "time_stride",
]
