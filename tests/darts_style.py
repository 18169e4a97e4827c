"""A DARTS-family search network as a user's code base has it: the structure of DARTS's operations.py and
model_search.py (``MixedOp`` with its candidates in ``_ops``, ``Cell``, ``Network``), of PC-DARTS's partial-channel
``MixedOp``, of SNAS's ``MixedOp`` (it records its candidates' flops and mac on its first call), of DrNAS's DARTS-space
``MixedOp`` (partial channels, and candidates whose weight is exactly 0 skipped) and of DrNAS's NAS-Bench-201
partial-channel search cell, written here (our own code, not copied; ``../shared/docs/peer-mixed-ops.md`` says where
each comes from). ``tests/test_fuse.py`` checks snas_fast.fuse_mixed_ops against
it and ``bench/bench_fuse.py`` measures it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snas_fast import reference


# ---- a DARTS-style search space (the structure of DARTS's operations.py / model_search.py) ---------------------
class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(C_in, C_out, kernel_size, stride, padding,
                                                                  bias=False), nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False), nn.BatchNorm2d(C_in, affine=affine), nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, 1, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x.mul(0.0) if self.stride == 1 else x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


class Swish(nn.Module):  # a candidate the fuse cannot fold: it runs as it is
    def __init__(self, C, stride):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, stride, 1, bias=False)

    def forward(self, x):
        y = self.conv(x)
        return y * torch.sigmoid(y)


OPS = {
    "none": lambda C, stride: Zero(stride),
    "avg_pool_3x3": lambda C, stride: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride: Identity() if stride == 1 else FactorizedReduce(C, C, affine=False),
    "sep_conv_3x3": lambda C, stride: SepConv(C, C, 3, stride, 1, affine=False),
    "sep_conv_5x5": lambda C, stride: SepConv(C, C, 5, stride, 2, affine=False),
    "dil_conv_3x3": lambda C, stride: DilConv(C, C, 3, stride, 2, 2, affine=False),
    "dil_conv_5x5": lambda C, stride: DilConv(C, C, 5, stride, 4, 2, affine=False),
    "swish": lambda C, stride: Swish(C, stride),
}
PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5"]


class MixedOp(nn.Module):
    def __init__(self, C, stride, primitives, pool_bn=True):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in primitives:
            op = OPS[primitive](C, stride)
            if "pool" in primitive and pool_bn:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class Cell(nn.Module):
    def __init__(self, steps, C_pp, C_p, C, reduction, reduction_prev, make_op):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_pp, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_pp, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                self._ops.append(make_op(C, 2 if reduction and j < 2 else 1))

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._steps:], dim=1)


class Network(nn.Module):
    """DARTS's search network, small: C channels, ``layers`` cells (reductions at 1/3 and 2/3), 2 nodes."""

    def __init__(self, C=4, num_classes=5, layers=3, steps=2, make_op=None, primitives=PRIMITIVES, dirichlet=False):
        super().__init__()
        self.dirichlet = dirichlet  # DrNAS's weights (dirichlet_weights, pruned by the masks), else a softmax
        make_op = make_op or (lambda C, stride: MixedOp(C, stride, primitives))
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
        C_pp, C_p, C_curr = 3 * C, 3 * C, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in [layers // 3, 2 * layers // 3]
            if reduction:
                C_curr *= 2
            self.cells.append(Cell(steps, C_pp, C_p, C_curr, reduction, reduction_prev, make_op))
            reduction_prev = reduction
            C_pp, C_p = C_p, steps * C_curr
        self.classifier = nn.Linear(C_p, num_classes)
        k = sum(2 + i for i in range(steps))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(k, len(primitives)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(k, len(primitives)))
        if dirichlet:
            self.register_buffer("mask_normal", torch.ones(k, len(primitives)))
            self.register_buffer("mask_reduce", torch.ones(k, len(primitives)))

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            if self.dirichlet:
                w = dirichlet_weights(*((self.alphas_reduce, self.mask_reduce) if cell.reduction
                                        else (self.alphas_normal, self.mask_normal)))
            else:
                w = F.softmax(self.alphas_reduce if cell.reduction else self.alphas_normal, dim=-1)
            s0, s1 = s1, cell(s0, s1, w)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


# ---- PC-DARTS's MixedOp (their model_search.py's structure) -------------------------------------------------------
class PCMixedOp(nn.Module):
    def __init__(self, C, stride, primitives=PRIMITIVES, k=4):
        super().__init__()
        self._ops = nn.ModuleList()
        self.mp = nn.MaxPool2d(2, 2)
        self.k = k
        for primitive in primitives:
            op = OPS[primitive](C // k, stride)
            if "pool" in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C // k, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        dim_2 = x.shape[1]
        xtemp, xtemp2 = x[:, : dim_2 // self.k], x[:, dim_2 // self.k:]
        temp1 = sum(w * op(xtemp) for w, op in zip(weights, self._ops))
        ans = torch.cat([temp1, xtemp2 if temp1.shape[2] == x.shape[2] else self.mp(xtemp2)], dim=1)
        return reference.channel_shuffle(ans, self.k)


PCMixedOp.__name__ = "MixedOp"  # what fuse_mixed_ops's default match looks for, as in their code


# ---- SNAS's MixedOp (SNAS-Series' SNAS/model_search.py's structure): flops and mac recorded on the first call -----
class Counted(nn.Module):
    """A candidate that sets its ``flops`` and ``mac`` from its input on every call, as SNAS's operations do."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.flops = self.mac = 0

    def forward(self, x):
        self.flops, self.mac = float(x.numel() * (1 + len(list(self.op.parameters())))), float(2 * x.numel())
        return self.op(x)


class SNASMixedOp(nn.Module):
    def __init__(self, C, stride, primitives=PRIMITIVES):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in primitives:
            op = OPS[primitive](C, stride)
            if "pool" in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(Counted(op))
        self._resource_flops = torch.zeros(len(primitives))
        self._resource_mac = torch.zeros(len(primitives))
        self.got_flops_mac = False

    def forward(self, x, weights):
        if self.got_flops_mac:
            return sum(w * op(x) for w, op in zip(weights, self._ops))
        result = 0
        for index, (w, op) in enumerate(zip(weights, self._ops)):
            result = result + w * op(x)
            self._resource_flops[index] = op.flops
            self._resource_mac[index] = op.mac
        self.got_flops_mac = True
        return result


SNASMixedOp.__name__ = "MixedOp"


# ---- DrNAS's DARTS-space MixedOp (DrNAS's DARTS-space/model_search.py's structure) --------------------------------
class DrNASMixedOp(PCMixedOp):
    """PC-DARTS's MixedOp with candidates of weight exactly 0 skipped and ``k = 1`` without the shuffle."""

    def __init__(self, C, stride, primitives=PRIMITIVES, k=1):
        super().__init__(C, stride, primitives, k)

    def forward(self, x, weights):
        dim_2 = x.shape[1]
        xtemp, xtemp2 = x[:, : dim_2 // self.k], x[:, dim_2 // self.k:]
        temp1 = sum(w * op(xtemp) for w, op in zip(weights, self._ops) if not w == 0)
        if self.k == 1:
            return temp1
        ans = torch.cat([temp1, xtemp2 if temp1.shape[2] == x.shape[2] else self.mp(xtemp2)], dim=1)
        return reference.channel_shuffle(ans, self.k)


DrNASMixedOp.__name__ = "MixedOp"


def dirichlet_weights(concentration, mask=None):
    """DrNAS's weights: a Dirichlet draw per row (``rsample``: differentiable), pruned entries exactly 0."""
    w = torch.distributions.Dirichlet(F.elu(concentration) + 1).rsample()
    return w if mask is None else w * mask


# ---- DrNAS's NAS-Bench-201 partial-channel search cell (201-space/search_cells.py's structure) ---------------------
NB201 = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def nb201_op(name, C):
    return {"none": lambda: Zero(1), "skip_connect": Identity,
            "nor_conv_1x1": lambda: ReLUConvBN(C, C, 1, 1, 0, affine=False),
            "nor_conv_3x3": lambda: ReLUConvBN(C, C, 3, 1, 1, affine=False),
            "avg_pool_3x3": lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False)}[name]()


class NAS201PartialChannelCell(nn.Module):
    def __init__(self, C, max_nodes=4, k=2, op_names=NB201):
        super().__init__()
        self.edges = nn.ModuleDict()
        self.max_nodes, self.k = max_nodes, k
        for i in range(1, max_nodes):
            for j in range(i):
                self.edges[f"{i}<-{j}"] = nn.ModuleList([nb201_op(name, C // k) for name in op_names])
        self.edge_keys = sorted(self.edges)
        self.edge2index = {key: i for i, key in enumerate(self.edge_keys)}

    def MixedOp(self, x, ops, weights):  # noqa: N802 - their name
        dim_2 = x.shape[1]
        xtemp, xtemp2 = x[:, : dim_2 // self.k], x[:, dim_2 // self.k:]
        temp1 = sum(w * op(xtemp) for w, op in zip(weights, ops) if not w == 0)
        if self.k == 1:
            return temp1
        return reference.channel_shuffle(torch.cat([temp1, xtemp2], dim=1), self.k)

    def forward(self, inputs, weightss):
        nodes = [inputs]
        for i in range(1, self.max_nodes):
            inter_nodes = []
            for j in range(i):
                node_str = f"{i}<-{j}"
                weights = weightss[self.edge2index[node_str]]
                inter_nodes.append(self.MixedOp(nodes[j], self.edges[node_str], weights))
            nodes.append(sum(inter_nodes))
        return nodes[-1]


class DrNAS201Network(nn.Module):
    """DrNAS's NAS-Bench-201 search network, small: a stem, ``N`` cells at C channels, Dirichlet weights over
    ``alphas`` with the entries of ``mask`` that are 0 pruned (exactly 0)."""

    def __init__(self, C=8, N=2, num_classes=5, k=2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList([NAS201PartialChannelCell(C, k=k) for _ in range(N)])
        self.classifier = nn.Linear(C, num_classes)
        self.alphas = nn.Parameter(1e-3 * torch.randn(6, len(NB201)))
        self.register_buffer("mask", torch.ones(6, len(NB201)))

    def forward(self, x):
        w = dirichlet_weights(self.alphas, self.mask)
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h, w)
        return self.classifier(F.adaptive_avg_pool2d(h, 1).flatten(1))
