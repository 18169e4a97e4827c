"""MNIST-1D's reference networks (Greydanus & Kobak; ``notebooks/models.py`` of greydanus/mnist1d), written here from
their published description, on the one-row images ``[B, 1, 1, L]`` the ``darts1d`` space reads: the measure a
searched cell has to beat (``snas-fast train --dataset mnist1d --baseline convbase|mlp|gru|logistic``).

At their published widths (:data:`WIDTHS`) they have the published parameter counts: logistic 410, mlp 15,210,
convbase 5,210, gru 5,134.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["BASELINES", "ConvBase", "GRUBase", "LinearBase", "MLPBase", "WIDTHS", "reference"]

#: The references, and their published widths (convbase: channels; mlp, gru: hidden units; logistic: none).
WIDTHS = {"convbase": 25, "mlp": 100, "gru": 6, "logistic": 0}
BASELINES = tuple(WIDTHS)


class LinearBase(nn.Module):
    """Logistic regression: ``[B, 1, 1, L] -> [B, num_classes]``, one linear layer on the raw sequence."""

    def __init__(self, length: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(length, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


class MLPBase(nn.Module):
    """Three linear layers of ``hidden`` units, the second with a residual connection (as published):
    ``[B, 1, 1, L] -> [B, num_classes]``."""

    def __init__(self, length: int, num_classes: int, hidden: int = 100):
        super().__init__()
        self.linear1 = nn.Linear(length, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(x.flatten(1)).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


class ConvBase(nn.Module):
    """Three ``Conv1d`` of ``channels`` (kernels 5, 3, 3; stride 2; padding 1), ReLU after each, then a linear layer
    on the flattened features: ``[B, 1, 1, L] -> [B, num_classes]`` (``L = 40``: 19, 10, then 5 positions)."""

    def __init__(self, length: int, num_classes: int, channels: int = 25):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        out = length
        for k in (5, 3, 3):
            out = (out + 2 - k) // 2 + 1
        self.linear = nn.Linear(channels * out, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1).unsqueeze(1)  # [B, 1, L]
        h = self.conv3(self.conv2(self.conv1(h).relu()).relu()).relu()
        return self.linear(h.flatten(1))


class GRUBase(nn.Module):
    """A bidirectional GRU of ``hidden`` units over the ``L`` positions (one value each), then a linear layer on all
    its outputs, ``[B, L * 2 * hidden]``: ``[B, 1, 1, L] -> [B, num_classes]``."""

    def __init__(self, length: int, num_classes: int, hidden: int = 6):
        super().__init__()
        self.gru = nn.GRU(input_size=1, hidden_size=hidden, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden * length, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(x.flatten(1).unsqueeze(-1))  # [B, L, 2 * hidden], a zero initial state
        return self.linear(out.flatten(1))


def reference(name: str, length: int, num_classes: int, width: int = 0) -> nn.Module:
    """The reference ``name`` (:data:`BASELINES`) for sequences of ``length``; ``width`` its channels or hidden units
    (0: the published :data:`WIDTHS`; ignored by ``logistic``)."""
    if name not in WIDTHS:
        raise ValueError(f"name: expected one of {', '.join(BASELINES)}, got {name!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"width: expected an integer >= 0 (0: the published width), got {width!r}")
    width = width or WIDTHS[name]
    if name == "logistic":
        return LinearBase(length, num_classes)
    return dict(convbase=ConvBase, mlp=MLPBase, gru=GRUBase)[name](length, num_classes, width)
