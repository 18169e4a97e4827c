"""Triton backend of the deep-fused mixed edge: the same contract as ``mixed_edge_fwd_*`` / ``mixed_edge_bwd_*``
in csrc/mixed_edge.h, as two plain Python launchers that write into caller-allocated outputs.

    mixed_edge_fwd(x, us, w, cols, stride, batch_stats, running_mean, running_var, momentum, eps, out, mean, rstd)
        -> a statistics launch (batch_stats and M > 0 only), then one elementwise launch
    mixed_edge_bwd(x, us, w, cols, stride, batch_stats, mean, rstd, grad_out, dx, dus, grad_w)
        -> a reduction launch, then one elementwise launch

    out = w[max] * maxpool3x3(x) + w[avg] * avgpool3x3(x) + w[id] * x + sum_m w[bn_m] * (u_m - mean[m, c]) * rstd[m, c]

Shapes (B batch, C channels, H x W input, Ho x Wo output, s = stride in {1, 2}, M <= MAX_BN BatchNorm terms):
    x, dx                 [B, C, H, W], dtype T in {f16, bf16, f32, f64}; dx has x's strides
    us[m], dus[m]         [B, C, Ho, Wo] T, all with the strides of us[0]
    out, grad_out         [B, C, Ho, Wo] T, one layout
    (each contiguous in NCHW or channels_last: plane (b, c) at b * sB + c * sC, its element i = h * W + w at
    i * es, the three strides of each role passed to the kernels; see PlaneLayout in csrc/mixed_edge.h)
    w, grad_w             [R, K] contiguous, acc dtype (f32, or f64 when T is f64); R = 1 or B
    mean, rstd            [M, C] acc dtype
    running_mean/var[m]   [C] acc dtype (or empty lists)
    cols                  (max_col, avg_col, id_col, [bn_col_0, ..., bn_col_{M-1}]), -1 = absent x-term

Every kernel runs on a 1-D grid of B * C programs, one per (b, c) plane; a program walks its plane in blocks of
BLOCK elements (any plane size). Planes, not flat blocks, because every reduction of this op is per channel (the
BatchNorm statistics and S1/S2) or per row (grad_w): a plane is the natural unit of a deterministic partial sum,
and the combination of the B (or C) partials of a channel (row) is done by a fixed reduction over a small
workspace, never with atomics:

    forward   stats kernel     plane mean and M2 of every u_m            -> WS [M, C, 2, B]
              elementwise      channel statistics from WS (mean of the plane means; M2 = sum M2_b +
                               Ho*Wo * sum (mean_b - mean)^2, Chan's formula for equal counts, as a fixed tree);
                               program b == 0 writes mean/rstd and updates the running statistics; then out
    backward  reduction        per plane: sum G, <maxpool(x), G>, <avgpool(x), G>, <x, G>, <xhat_m, G>
                               -> PART [B * C, NT]; and the max-pool argmax tape (int8 tap 0..8 per output)
              elementwise      S1/S2 of the channel from PART (fixed tree over b), dus, dx (gather form), and
                               grad_w rows (program c == 0 of row b, or program 0 when R = 1, sums PART rows)

The max pool follows at::max_pool2d: windows scanned in row-major order, a tap wins when it is strictly greater
than the running maximum or NaN, the initial winner is the first in-bounds tap. The reduction kernel records the
winning tap of every window (1 byte per output element), so the elementwise kernel computes dx by gathering:
for each input element, the (at most 3 x 3 at stride 1, 2 x 2 at stride 2) windows that contain it, adding
G[window] when the window's winner is this element. No scatter, so dx is deterministic too.

The u_m are read in place (never stacked): MAX_BN pointer slots (unused ones alias slot 0) picked with
compile-time branches inside ``tl.static_range`` loops, as kernels/mixed_op.py does. Float scalars (eps,
momentum, element counts) travel as int64 bit patterns of Python doubles (scalar float arguments are f32 in
Triton), so float64 runs are exact. rstd is computed in float64 and rounded once (no fast-math rsqrt).

Set TRITON_INTERPRET=1 before triton is imported to run these kernels on CPU tensors.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .mixed_op import _col, _next_pow2, _on_device, _tau_bits

__all__ = ["mixed_edge_fwd", "mixed_edge_bwd", "MAX_BN"]

MAX_BN = 8  # BatchNorm-ended candidates per edge (kMaxEdgeBn in csrc/mixed_edge.h): pointer slots U0..U7
MAX_BLOCK = 1024  # elements of a plane per block (smaller planes use next_pow2(plane), at least MIN_BLOCK)
MIN_BLOCK = 32
MAX_BLOCK_DX = 512  # dx gathers from up to 9 windows per element: fewer elements per thread keeps registers low
MAX_CHUNK = 1024  # elements of one workspace tile (B or C partials x terms) in the combining reductions

# Columns of the per-plane partials PART[plane, t] of the backward.
T_SUM_G, T_MAX, T_AVG, T_ID, T_BN = 0, 1, 2, 3, 4  # T_BN + m: <xhat_m, G>


# --------------------------------------------------------------------------------------------------------------
# Small device helpers
# --------------------------------------------------------------------------------------------------------------
@triton.jit
def _pick8(j: tl.constexpr, A0, A1, A2, A3, A4, A5, A6, A7):
    # Compile-time selection of slot j (j is a constexpr, so only one branch is generated).
    if j == 0:
        r = A0
    elif j == 1:
        r = A1
    elif j == 2:
        r = A2
    elif j == 3:
        r = A3
    elif j == 4:
        r = A4
    elif j == 5:
        r = A5
    elif j == 6:
        r = A6
    else:
        tl.static_assert(j == 7, "BatchNorm slot out of range")
        r = A7
    return r


@triton.jit
def _unpack8(v, idx):
    # The 8 entries of a small vector v (indexed by idx) as scalars, one per BatchNorm slot.
    return (_col(v, idx, 0), _col(v, idx, 1), _col(v, idx, 2), _col(v, idx, 3), _col(v, idx, 4), _col(v, idx, 5),
            _col(v, idx, 6), _col(v, idx, 7))


@triton.jit
def _from_bits(bits, ACC: tl.constexpr):
    # A Python double passed as its int64 bit pattern, rounded to ACC.
    return bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)


@triton.jit
def _plane(b, c, SB, SC):
    # Offset of plane (b, c) of a tensor whose batch and channel strides are SB and SC.
    return b.to(tl.int64) * SB + c.to(tl.int64) * SC


@triton.jit
def _pool3x3(X, xbase, XES, ho, wo, mask, H, W, STRIDE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
             DO_MAX: tl.constexpr, DO_AVG: tl.constexpr, DO_ARG: tl.constexpr):
    # 3x3 windows (padding 1) of x around the outputs (ho, wo) of one plane (x plane at X + xbase, H x W).
    # Returns (max, winning tap 0..8 as dh * 3 + dw, avg with count_include_pad=False, the centre tap x[ho*s, wo*s]).
    # The max scan is at::max_pool2d's: row-major, strictly greater or NaN wins, first in-bounds tap initially.
    mx = tl.full([BLOCK], float("-inf"), ACC)
    arg = tl.full([BLOCK], -1, tl.int32)
    sm = tl.zeros([BLOCK], dtype=ACC)
    xc = tl.zeros([BLOCK], dtype=ACC)
    h0 = ho * STRIDE - 1
    w0 = wo * STRIDE - 1
    for dh in tl.static_range(3):
        ih = h0 + dh
        okh = mask & (ih >= 0) & (ih < H)
        for dw in tl.static_range(3):
            iw = w0 + dw
            ok = okh & (iw >= 0) & (iw < W)
            v = tl.load(X + xbase + (ih * W + iw) * XES, mask=ok, other=0.0).to(ACC)
            if dh == 1 and dw == 1:
                xc = v
            if DO_MAX:
                upd = ok & ((v > mx) | (v != v))
                if DO_ARG:
                    arg = tl.where(upd | (ok & (arg < 0)), dh * 3 + dw, arg)
                mx = tl.where(upd, v, mx)
            if DO_AVG:
                sm += v
    mx = tl.where(mask, mx, 0.0)  # off-plane lanes: 0, not -inf (no -inf * 0 in the callers' sums)
    avg = sm
    if DO_AVG:
        cnt = (tl.minimum(h0 + 2, H - 1) - tl.maximum(h0, 0) + 1) * (tl.minimum(w0 + 2, W - 1) - tl.maximum(w0, 0) + 1)
        avg = sm / tl.where(mask, cnt, 1).to(ACC)
    return mx, arg, avg, xc


# --------------------------------------------------------------------------------------------------------------
# Forward, pass 1 (batch_stats only): per plane (b, c) and term m, the plane mean and M2 = sum (u - mean)^2 of
# u_m, accumulated block by block with Chan's update (each block's own mean and M2 first: no cancellation).
# --------------------------------------------------------------------------------------------------------------
@triton.jit
def _edge_stats_kernel(
    # us[m]: [B, C, Ho, Wo] T; slots >= M alias U0
    U0, U1, U2, U3, U4, U5, U6, U7,
    WS,  # [M, C, 2, B] acc dtype, written: WS[m, c, 0, b] = plane mean, WS[m, c, 1, b] = plane M2
    B, C,
    P,  # elements per plane (Ho * Wo)
    USB, USC, UES,  # layout of the us
    M: tl.constexpr,  # number of BatchNorm terms (1..8)
    MB: tl.constexpr,  # next_pow2(M)
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid // C
    c = pid % C
    ACC = WS.dtype.element_ty
    base = _plane(b, c, USB, USC)
    midx = tl.arange(0, MB)
    offs = tl.arange(0, BLOCK)
    mean_v = tl.zeros([MB], dtype=ACC)
    m2_v = tl.zeros([MB], dtype=ACC)
    na = tl.zeros([MB], dtype=ACC)  # elements already combined
    for start in range(0, P, BLOCK):
        idx = start + offs
        mask = idx < P
        nb = tl.sum(mask.to(ACC), axis=0)  # elements in this block
        bmean_v = tl.zeros([MB], dtype=ACC)
        bm2_v = tl.zeros([MB], dtype=ACC)
        for m in tl.static_range(M):
            up = _pick8(m, U0, U1, U2, U3, U4, U5, U6, U7)
            u = tl.load(up + base + idx * UES, mask=mask, other=0.0).to(ACC)
            bm = tl.sum(u, axis=0) / nb
            d = tl.where(mask, u - bm, 0.0)
            bmean_v = tl.where(midx == m, bm, bmean_v)
            bm2_v = tl.where(midx == m, tl.sum(d * d, axis=0), bm2_v)
        tot = na + nb
        delta = bmean_v - mean_v
        mean_v += delta * (nb / tot)
        m2_v += bm2_v + delta * (delta * (na * nb / tot))  # not (delta * delta) * 0: inf * 0 = NaN when na = 0
        na = tot
    wsp = WS + ((midx * C + c) * 2).to(tl.int64) * B + b
    tl.store(wsp, mean_v, mask=midx < M)
    tl.store(wsp + B, m2_v, mask=midx < M)


# --------------------------------------------------------------------------------------------------------------
# Forward, pass 2: per plane (b, c) the channel statistics (batch_stats) and out.
#   mean[m, c] = (1 / B) sum_b mean_b          (equal counts Ho * Wo per plane)
#   M2[m, c]   = sum_b M2_b + Ho * Wo * sum_b (mean_b - mean)^2,   var = M2 / n,   n = B * Ho * Wo
#   rstd = 1 / sqrt(var + eps) (in f64, rounded once); running: rm = (1 - mom) rm + mom mean,
#   rv = (1 - mom) rv + mom M2 / (n - 1) (BatchNorm2d), by program b == 0 of the channel.
# --------------------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["max_col", "avg_col", "id_col", "BC0", "BC1", "BC2", "BC3", "BC4", "BC5", "BC6",
                               "BC7", "eps_bits", "mom_bits", "pf_bits", "nf_bits", "nm1_bits"])
def _edge_fwd_kernel(
    X,  # [B, C, H, W] T
    # us[m]: [B, C, Ho, Wo] T; slots >= M alias U0
    U0, U1, U2, U3, U4, U5, U6, U7,
    WT,  # [R, K] acc dtype: the weights
    MEAN,  # [M, C] acc dtype: written (BATCH_STATS, by b == 0) or read
    RSTD,  # [M, C] acc dtype: written (BATCH_STATS, by b == 0) or read
    # running_mean[m], running_var[m]: [C] acc dtype, updated in place when UPDATE; slots >= M alias slot 0
    RM0, RM1, RM2, RM3, RM4, RM5, RM6, RM7,
    RV0, RV1, RV2, RV3, RV4, RV5, RV6, RV7,
    WS,  # [M, C, 2, B] acc dtype: plane means and M2 from _edge_stats_kernel (BATCH_STATS)
    OUT,  # [B, C, Ho, Wo] T
    B, C, H, W, Ho, Wo,
    XSB, XSC, XES, USB, USC, UES, OSB, OSC, OES,  # layouts of x, the us, out
    K,  # columns of w
    WSTRIDE,  # K when R = B (one row per example), 0 when R = 1
    max_col, avg_col, id_col,  # columns of the x-terms (used only when the HAS_* flag is set)
    BC0, BC1, BC2, BC3, BC4, BC5, BC6, BC7,  # bn_cols[m]; slots >= M unused
    eps_bits, mom_bits,  # int64 bit patterns of eps and momentum
    pf_bits, nf_bits, nm1_bits,  # bit patterns of Ho * Wo, n = B * Ho * Wo and n - 1 (as doubles)
    M: tl.constexpr,
    MB: tl.constexpr,  # next_pow2(M)
    KB: tl.constexpr,  # next_pow2(K)
    STRIDE: tl.constexpr,
    HAS_MAX: tl.constexpr,
    HAS_AVG: tl.constexpr,
    HAS_ID: tl.constexpr,
    BATCH_STATS: tl.constexpr,
    UPDATE: tl.constexpr,  # update the running statistics
    BCH: tl.constexpr,  # batch entries per tile of the statistics combination
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid // C
    c = pid % C
    ACC = WT.dtype.element_ty
    midx = tl.arange(0, MB)
    mmask = midx < M

    # ---- the weights of this plane's row ------------------------------------------------------------------------
    cols = tl.arange(0, KB)
    wrow = tl.load(WT + b * WSTRIDE + cols, mask=cols < K, other=0.0).to(ACC)
    w_max = _col(wrow, cols, max_col)
    w_avg = _col(wrow, cols, avg_col)
    w_id = _col(wrow, cols, id_col)

    # ---- the statistics of channel c ------------------------------------------------------------------------------
    if BATCH_STATS and M > 0:
        pf = _from_bits(pf_bits, ACC)
        nf = _from_bits(nf_bits, ACC)
        ws_row = ((midx * C + c) * 2).to(tl.int64) * B  # [MB]
        s = tl.zeros([MB], dtype=ACC)
        for b0 in range(0, B, BCH):
            bidx = b0 + tl.arange(0, BCH)
            tm = mmask[:, None] & (bidx < B)[None, :]
            s += tl.sum(tl.load(WS + ws_row[:, None] + bidx[None, :], mask=tm, other=0.0), axis=1)
        mean_v = s / B
        q = tl.zeros([MB], dtype=ACC)
        for b0 in range(0, B, BCH):
            bidx = b0 + tl.arange(0, BCH)
            tm = mmask[:, None] & (bidx < B)[None, :]
            mb = tl.load(WS + ws_row[:, None] + bidx[None, :], mask=tm, other=0.0)
            m2b = tl.load(WS + ws_row[:, None] + B + bidx[None, :], mask=tm, other=0.0)
            d = tl.where(tm, mb - mean_v[:, None], 0.0)
            q += tl.sum(m2b + pf * d * d, axis=1)
        var_v = q / nf
        eps = _from_bits(eps_bits, ACC)
        rstd_v = (1.0 / tl.sqrt((var_v + eps).to(tl.float64))).to(ACC)
        if b == 0:  # exactly one program per channel writes the statistics
            tl.store(MEAN + midx * C + c, mean_v, mask=mmask)
            tl.store(RSTD + midx * C + c, rstd_v, mask=mmask)
            if UPDATE:
                mom = _from_bits(mom_bits, ACC)
                unbiased_v = q / _from_bits(nm1_bits, ACC)
                for m in tl.static_range(M):
                    rmp = _pick8(m, RM0, RM1, RM2, RM3, RM4, RM5, RM6, RM7)
                    rvp = _pick8(m, RV0, RV1, RV2, RV3, RV4, RV5, RV6, RV7)
                    rm = tl.load(rmp + c).to(ACC)
                    rv = tl.load(rvp + c).to(ACC)
                    tl.store(rmp + c, (1.0 - mom) * rm + mom * _col(mean_v, midx, m))
                    tl.store(rvp + c, (1.0 - mom) * rv + mom * _col(unbiased_v, midx, m))
    else:
        mean_v = tl.load(MEAN + midx * C + c, mask=mmask, other=0.0).to(ACC)
        rstd_v = tl.load(RSTD + midx * C + c, mask=mmask, other=0.0).to(ACC)
    # per-term scalars, hoisted out of the element loop (slots >= M are unused): out += a_m * (u_m - mu_m)
    mu0, mu1, mu2, mu3, mu4, mu5, mu6, mu7 = _unpack8(mean_v, midx)
    a0 = _col(wrow, cols, BC0) * _col(rstd_v, midx, 0)
    a1 = _col(wrow, cols, BC1) * _col(rstd_v, midx, 1)
    a2 = _col(wrow, cols, BC2) * _col(rstd_v, midx, 2)
    a3 = _col(wrow, cols, BC3) * _col(rstd_v, midx, 3)
    a4 = _col(wrow, cols, BC4) * _col(rstd_v, midx, 4)
    a5 = _col(wrow, cols, BC5) * _col(rstd_v, midx, 5)
    a6 = _col(wrow, cols, BC6) * _col(rstd_v, midx, 6)
    a7 = _col(wrow, cols, BC7) * _col(rstd_v, midx, 7)

    # ---- out ----------------------------------------------------------------------------------------------------
    P = Ho * Wo
    xbase = _plane(b, c, XSB, XSC)
    ubase = _plane(b, c, USB, USC)
    obase = _plane(b, c, OSB, OSC)
    offs = tl.arange(0, BLOCK)
    for start in range(0, P, BLOCK):
        idx = start + offs
        mask = idx < P
        acc = tl.zeros([BLOCK], dtype=ACC)
        if HAS_MAX or HAS_AVG:
            ho = idx // Wo
            wo = idx % Wo
            mx, _arg, avg, xc = _pool3x3(X, xbase, XES, ho, wo, mask, H, W, STRIDE, BLOCK, ACC, HAS_MAX, HAS_AVG,
                                         False)
            if HAS_MAX:
                acc += w_max * mx
            if HAS_AVG:
                acc += w_avg * avg
            if HAS_ID:  # stride 1: x[ho, wo] is the centre tap
                acc += w_id * xc
        elif HAS_ID:
            acc += w_id * tl.load(X + xbase + idx * XES, mask=mask, other=0.0).to(ACC)
        for m in tl.static_range(M):
            up = _pick8(m, U0, U1, U2, U3, U4, U5, U6, U7)
            am = _pick8(m, a0, a1, a2, a3, a4, a5, a6, a7)
            mum = _pick8(m, mu0, mu1, mu2, mu3, mu4, mu5, mu6, mu7)
            u = tl.load(up + ubase + idx * UES, mask=mask, other=0.0).to(ACC)
            acc += am * (u - mum)
        tl.store(OUT + obase + idx * OES, acc.to(OUT.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------------------------
# Backward (VJP). G = grad_out, w_b = w[b or 0, :], xhat_m = (u_m - mean[m, c]) rstd[m, c], n = B Ho Wo.
#
#   out = w_b[max] maxpool(x) + w_b[avg] avgpool(x) + w_b[id] x + sum_m w_b[bn_m] xhat_m
#
#   dL/dx     = w_b[max] maxpool^T(G) + w_b[avg] avgpool^T(G) + w_b[id] G
#               maxpool^T: G of each window to its winner;  avgpool^T: G / count to each in-bounds tap
#   dL/dw[r,k]= sum over the elements of row r of (term of column k) * G
#   dL/du_m   = batch statistics (mean, var functions of u_m; with y = w_b[bn_m] G the upstream of xhat_m):
#                 rstd (y - S1 / n - xhat_m S2 / n),  S1 = sum_{b,h,w} y,  S2 = sum_{b,h,w} y xhat_m
#               (d xhat_i / d u_j = rstd (delta_ij - 1/n - xhat_i xhat_j / n), summed against y_i);
#               eval mode (mean, rstd constants): rstd w_b[bn_m] G.
#
# Since w_b is constant over a plane, S1 = sum_b w_b[bn_m] sum_plane G and S2 = sum_b w_b[bn_m] <xhat_m, G>_plane:
# the reduction kernel writes the unweighted plane sums, the elementwise kernel weights and combines them over b.
# The same plane sums <term, G> give grad_w. Fixed trees over fixed workspaces, no atomics: deterministic.
# --------------------------------------------------------------------------------------------------------------
@triton.jit
def _edge_bwd_reduce_kernel(
    X,  # [B, C, H, W] T
    # us[m]: [B, C, Ho, Wo] T; slots >= M alias U0
    U0, U1, U2, U3, U4, U5, U6, U7,
    MEAN,  # [M, C] acc dtype
    RSTD,  # [M, C] acc dtype
    G,  # [B, C, Ho, Wo] T: grad_out
    PART,  # [B * C, NT] acc dtype, written: the plane sums (columns T_SUM_G, T_MAX, T_AVG, T_ID, T_BN + m)
    TAPE,  # [B, C, Ho, Wo] int8 contiguous, written when HAS_MAX: winning tap of each max-pool window
    C, H, W, Ho, Wo,
    XSB, XSC, XES, USB, USC, UES, GSB, GSC, GES,  # layouts of x, the us, grad_out
    M: tl.constexpr,
    MB: tl.constexpr,
    NT: tl.constexpr,  # next_pow2(4 + M)
    STRIDE: tl.constexpr,
    HAS_MAX: tl.constexpr,
    HAS_AVG: tl.constexpr,
    HAS_ID: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    c = pid % C
    ACC = PART.dtype.element_ty
    midx = tl.arange(0, MB)
    mmask = midx < M
    mean_v = tl.load(MEAN + midx * C + c, mask=mmask, other=0.0).to(ACC)
    rstd_v = tl.load(RSTD + midx * C + c, mask=mmask, other=0.0).to(ACC)
    mu0, mu1, mu2, mu3, mu4, mu5, mu6, mu7 = _unpack8(mean_v, midx)
    rs0, rs1, rs2, rs3, rs4, rs5, rs6, rs7 = _unpack8(rstd_v, midx)

    P = Ho * Wo
    b = pid // C
    xbase = _plane(b, c, XSB, XSC)
    ubase = _plane(b, c, USB, USC)
    gbase = _plane(b, c, GSB, GSC)
    tbase = pid.to(tl.int64) * P
    tidx = tl.arange(0, NT)
    sums = tl.zeros([NT], dtype=ACC)
    offs = tl.arange(0, BLOCK)
    for start in range(0, P, BLOCK):
        idx = start + offs
        mask = idx < P
        g = tl.load(G + gbase + idx * GES, mask=mask, other=0.0).to(ACC)
        sums += tl.where(tidx == 0, tl.sum(g, axis=0), 0.0)
        if HAS_MAX or HAS_AVG:
            ho = idx // Wo
            wo = idx % Wo
            mx, arg, avg, xc = _pool3x3(X, xbase, XES, ho, wo, mask, H, W, STRIDE, BLOCK, ACC, HAS_MAX, HAS_AVG,
                                        HAS_MAX)
            if HAS_MAX:
                tl.store(TAPE + tbase + idx, arg.to(tl.int8), mask=mask)
                sums += tl.where(tidx == 1, tl.sum(mx * g, axis=0), 0.0)
            if HAS_AVG:
                sums += tl.where(tidx == 2, tl.sum(avg * g, axis=0), 0.0)
            if HAS_ID:
                sums += tl.where(tidx == 3, tl.sum(xc * g, axis=0), 0.0)
        elif HAS_ID:
            xv = tl.load(X + xbase + idx * XES, mask=mask, other=0.0).to(ACC)
            sums += tl.where(tidx == 3, tl.sum(xv * g, axis=0), 0.0)
        for m in tl.static_range(M):
            up = _pick8(m, U0, U1, U2, U3, U4, U5, U6, U7)
            mum = _pick8(m, mu0, mu1, mu2, mu3, mu4, mu5, mu6, mu7)
            rsm = _pick8(m, rs0, rs1, rs2, rs3, rs4, rs5, rs6, rs7)
            u = tl.load(up + ubase + idx * UES, mask=mask, other=0.0).to(ACC)
            sums += tl.where(tidx == 4 + m, tl.sum((u - mum) * rsm * g, axis=0), 0.0)  # g = 0 off the plane
    tl.store(PART + pid.to(tl.int64) * NT + tidx, sums)


@triton.jit(do_not_specialize=["max_col", "avg_col", "id_col", "BC0", "BC1", "BC2", "BC3", "BC4", "BC5", "BC6",
                               "BC7", "nf_bits"])
def _edge_bwd_kernel(
    # us[m]: [B, C, Ho, Wo] T; slots >= M alias U0
    U0, U1, U2, U3, U4, U5, U6, U7,
    # dus[m]: [B, C, Ho, Wo] T, written; slots >= M alias D0
    D0, D1, D2, D3, D4, D5, D6, D7,
    WT,  # [R, K] acc dtype: the weights
    MEAN,  # [M, C] acc dtype
    RSTD,  # [M, C] acc dtype
    G,  # [B, C, Ho, Wo] T: grad_out
    PART,  # [B * C, NT] acc dtype: the plane sums of _edge_bwd_reduce_kernel
    TAPE,  # [B, C, Ho, Wo] int8: max-pool winners (HAS_MAX)
    DX,  # [B, C, H, W] T, written (zeros when there is no x-term)
    GW,  # [R, K] acc dtype, written: grad_w (program c == 0 of row b when PER_ROW, else program 0)
    B, C, H, W, Ho, Wo,
    XSB, XSC, XES, USB, USC, UES, GSB, GSC, GES,  # layouts of x (and dx), the us (and dus), grad_out
    K,  # columns of w
    WSTRIDE,  # K when R = B, 0 when R = 1
    max_col, avg_col, id_col,
    BC0, BC1, BC2, BC3, BC4, BC5, BC6, BC7,
    nf_bits,  # bit pattern of n = B * Ho * Wo (as a double)
    M: tl.constexpr,
    MB: tl.constexpr,
    NT: tl.constexpr,
    KB: tl.constexpr,
    STRIDE: tl.constexpr,
    HAS_MAX: tl.constexpr,
    HAS_AVG: tl.constexpr,
    HAS_ID: tl.constexpr,
    BATCH_STATS: tl.constexpr,
    PER_ROW: tl.constexpr,  # R = B > 1: one grad_w row per example
    BCH: tl.constexpr,  # batch entries per tile of the S1/S2 combination
    RCH: tl.constexpr,  # PART rows per tile of the grad_w reduction
    BLOCK_O: tl.constexpr,  # block over the output plane (dus)
    BLOCK_I: tl.constexpr,  # block over the input plane (dx)
):
    pid = tl.program_id(0)
    b = pid // C
    c = pid % C
    ACC = WT.dtype.element_ty
    midx = tl.arange(0, MB)
    mmask = midx < M
    tidx = tl.arange(0, NT)

    cols = tl.arange(0, KB)
    wrow = tl.load(WT + b * WSTRIDE + cols, mask=cols < K, other=0.0).to(ACC)
    w_max = _col(wrow, cols, max_col)
    w_avg = _col(wrow, cols, avg_col)
    w_id = _col(wrow, cols, id_col)
    wb0 = _col(wrow, cols, BC0)
    wb1 = _col(wrow, cols, BC1)
    wb2 = _col(wrow, cols, BC2)
    wb3 = _col(wrow, cols, BC3)
    wb4 = _col(wrow, cols, BC4)
    wb5 = _col(wrow, cols, BC5)
    wb6 = _col(wrow, cols, BC6)
    wb7 = _col(wrow, cols, BC7)
    mean_v = tl.load(MEAN + midx * C + c, mask=mmask, other=0.0).to(ACC)
    rstd_v = tl.load(RSTD + midx * C + c, mask=mmask, other=0.0).to(ACC)

    # ---- S1 / n and S2 / n of channel c (batch statistics): sum over b, in a fixed tree -----------------------
    s1_v = tl.zeros([MB], dtype=ACC)
    s2_v = tl.zeros([MB], dtype=ACC)
    if BATCH_STATS and M > 0:
        for b0 in range(0, B, BCH):
            bidx = b0 + tl.arange(0, BCH)
            bm = bidx < B
            prow = (bidx * C + c).to(tl.int64) * NT
            sg = tl.load(PART + prow, mask=bm, other=0.0)
            for m in tl.static_range(M):
                colm = _pick8(m, BC0, BC1, BC2, BC3, BC4, BC5, BC6, BC7)
                wv = tl.load(WT + bidx * WSTRIDE + colm, mask=bm, other=0.0).to(ACC)
                sx = tl.load(PART + prow + 4 + m, mask=bm, other=0.0)
                s1_v += tl.where(midx == m, tl.sum(wv * sg, axis=0), 0.0)
                s2_v += tl.where(midx == m, tl.sum(wv * sx, axis=0), 0.0)
        nf = _from_bits(nf_bits, ACC)
        s1_v = s1_v / nf
        s2_v = s2_v / nf
    mu0, mu1, mu2, mu3, mu4, mu5, mu6, mu7 = _unpack8(mean_v, midx)
    rs0, rs1, rs2, rs3, rs4, rs5, rs6, rs7 = _unpack8(rstd_v, midx)
    p0, p1, p2, p3, p4, p5, p6, p7 = _unpack8(s1_v, midx)
    q0, q1, q2, q3, q4, q5, q6, q7 = _unpack8(s2_v, midx)

    P = Ho * Wo
    PI = H * W
    xbase = _plane(b, c, XSB, XSC)
    ubase = _plane(b, c, USB, USC)
    gbase = _plane(b, c, GSB, GSC)
    tbase = pid.to(tl.int64) * P

    # ---- dus ----------------------------------------------------------------------------------------------------
    if M > 0:
        offs = tl.arange(0, BLOCK_O)
        for start in range(0, P, BLOCK_O):
            idx = start + offs
            mask = idx < P
            g = tl.load(G + gbase + idx * GES, mask=mask, other=0.0).to(ACC)
            for m in tl.static_range(M):
                up = _pick8(m, U0, U1, U2, U3, U4, U5, U6, U7)
                dp = _pick8(m, D0, D1, D2, D3, D4, D5, D6, D7)
                wm = _pick8(m, wb0, wb1, wb2, wb3, wb4, wb5, wb6, wb7)
                rsm = _pick8(m, rs0, rs1, rs2, rs3, rs4, rs5, rs6, rs7)
                if BATCH_STATS:
                    mum = _pick8(m, mu0, mu1, mu2, mu3, mu4, mu5, mu6, mu7)
                    s1 = _pick8(m, p0, p1, p2, p3, p4, p5, p6, p7)
                    s2 = _pick8(m, q0, q1, q2, q3, q4, q5, q6, q7)
                    u = tl.load(up + ubase + idx * UES, mask=mask, other=0.0).to(ACC)
                    xh = (u - mum) * rsm
                    du = rsm * (wm * g - s1 - xh * s2)
                else:
                    du = (rsm * wm) * g
                tl.store(dp + ubase + idx * UES, du.to(dp.dtype.element_ty), mask=mask)

    # ---- dx: gather over the windows that contain each input element ---------------------------------------------
    offs_i = tl.arange(0, BLOCK_I)
    for start in range(0, PI, BLOCK_I):
        idx = start + offs_i
        mask = idx < PI
        dx = tl.zeros([BLOCK_I], dtype=ACC)
        if HAS_MAX or HAS_AVG:
            h = idx // W
            w = idx % W
            dmax = tl.zeros([BLOCK_I], dtype=ACC)
            davg = tl.zeros([BLOCK_I], dtype=ACC)
            for i in tl.static_range(4 - STRIDE):  # windows per axis that can contain a row: 3 (s = 1), 2 (s = 2)
                ho = (h + 1) // STRIDE - i
                th = h - (ho * STRIDE - 1)  # tap row of (h, w) in window row ho: 0..2 when it is inside
                okh = mask & (ho >= 0) & (ho < Ho) & (th <= 2)
                cnth = tl.minimum(ho * STRIDE + 1, H - 1) - tl.maximum(ho * STRIDE - 1, 0) + 1
                for j in tl.static_range(4 - STRIDE):
                    wo = (w + 1) // STRIDE - j
                    tw = w - (wo * STRIDE - 1)
                    ok = okh & (wo >= 0) & (wo < Wo) & (tw <= 2)
                    gi = ho * Wo + wo
                    gv = tl.load(G + gbase + gi * GES, mask=ok, other=0.0).to(ACC)
                    if HAS_MAX:
                        code = tl.load(TAPE + tbase + gi, mask=ok, other=-1).to(tl.int32)
                        dmax += tl.where(code == th * 3 + tw, gv, 0.0)
                    if HAS_AVG:
                        cntw = tl.minimum(wo * STRIDE + 1, W - 1) - tl.maximum(wo * STRIDE - 1, 0) + 1
                        davg += gv / tl.where(ok, cnth * cntw, 1).to(ACC)
            if HAS_MAX:
                dx += w_max * dmax
            if HAS_AVG:
                dx += w_avg * davg
        if HAS_ID:  # stride 1: the input and output planes coincide
            dx += w_id * tl.load(G + gbase + idx * GES, mask=mask, other=0.0).to(ACC)
        tl.store(DX + xbase + idx * XES, dx.to(DX.dtype.element_ty), mask=mask)

    # ---- grad_w: the row's plane sums, in a fixed tree --------------------------------------------------------
    if PER_ROW:
        owner = c == 0
        first = b * C
        count = C
    else:
        owner = pid == 0
        first = 0
        count = B * C
    if owner:
        tot = tl.zeros([NT], dtype=ACC)
        for r0 in range(0, count, RCH):
            ridx = r0 + tl.arange(0, RCH)
            rows = (first + ridx).to(tl.int64) * NT
            tile = tl.load(PART + rows[:, None] + tidx[None, :], mask=(ridx < count)[:, None], other=0.0)
            tot += tl.sum(tile, axis=0)
        dw = tl.zeros([KB], dtype=ACC)
        if HAS_MAX:
            dw += tl.where(cols == max_col, _col(tot, tidx, 1), 0.0)
        if HAS_AVG:
            dw += tl.where(cols == avg_col, _col(tot, tidx, 2), 0.0)
        if HAS_ID:
            dw += tl.where(cols == id_col, _col(tot, tidx, 3), 0.0)
        for m in tl.static_range(M):
            colm = _pick8(m, BC0, BC1, BC2, BC3, BC4, BC5, BC6, BC7)
            dw += tl.where(cols == colm, _col(tot, tidx, 4 + m), 0.0)
        tl.store(GW + b * WSTRIDE + cols, dw, mask=cols < K)


# --------------------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------------------
def _block(n: int) -> int:
    return min(MAX_BLOCK, max(MIN_BLOCK, _next_pow2(n)))


def _warps(block: int) -> int:
    return max(1, min(8, block // 128))


def _f64_bits(v: float) -> int:
    return _tau_bits(v)  # the int64 bit pattern of a Python double


def _slots(ts: Sequence[Tensor], fill: Tensor) -> List[Tensor]:
    if len(ts) > MAX_BN:
        raise ValueError(f"us: the Triton backend supports at most {MAX_BN} BatchNorm terms, got {len(ts)}")
    ts = list(ts)
    return ts + [ts[0] if ts else fill] * (MAX_BN - len(ts))


def _bn_cols(bn_cols: Sequence[int]) -> List[int]:
    bn = [int(c) for c in bn_cols]
    return bn + [0] * (MAX_BN - len(bn))


def _geometry(x: Tensor, stride: int) -> Tuple[int, int, int, int, int, int]:
    B, C, H, W = x.shape
    return B, C, H, W, (H - 1) // stride + 1, (W - 1) // stride + 1


def _layout(t: Tensor) -> Tuple[int, int, int]:
    # (sB, sC, es) of a [B, C, H, W] tensor contiguous in NCHW or channels_last: PlaneLayout in csrc/mixed_edge.h.
    return t.stride(0), t.stride(1), t.stride(3) if t.shape[3] > 1 else t.stride(2)


def _nonempty(t: Tensor, fill: Tensor) -> Tensor:
    # Empty tensors ([0, C] statistics when M = 0) are never read; pass a real pointer instead.
    return t if t.numel() else fill


def mixed_edge_fwd(x: Tensor, us: List[Tensor], w: Tensor, cols, stride: int, batch_stats: bool,
                   running_mean: List[Tensor], running_var: List[Tensor], momentum: float, eps: float,
                   out: Tensor, mean: Tensor, rstd: Tensor) -> None:
    """Forward of the mixed edge into ``out`` (and ``mean``, ``rstd``, the running statistics when batch_stats);
    a statistics launch (batch statistics only) and an elementwise launch. See csrc/mixed_edge.h."""
    max_col, avg_col, id_col, bn_cols = cols
    M = len(us)
    B, C, H, W, Ho, Wo = _geometry(x, stride)
    K = w.shape[-1]
    R = w.numel() // K
    P = Ho * Wo
    n = B * P
    stats = bool(batch_stats) and M > 0
    update = stats and len(running_mean) > 0
    uslots = _slots(us, x)  # slots >= M are never read: x stands in (its layout too, when M = 0)
    block = _block(P)
    mb = _next_pow2(M)
    mean_p, rstd_p = _nonempty(mean, w), _nonempty(rstd, w)
    ws = torch.empty((M, C, 2, B), dtype=w.dtype, device=x.device) if stats else w
    rm = _slots(running_mean, w) if update else [w] * MAX_BN
    rv = _slots(running_var, w) if update else [w] * MAX_BN
    with _on_device(x.device):
        if stats:
            _edge_stats_kernel[(B * C,)](
                *uslots, ws, B, C, P, *_layout(uslots[0]), M=M, MB=mb, BLOCK=block, num_warps=_warps(block),
            )
        _edge_fwd_kernel[(B * C,)](
            x, *uslots, w, mean_p, rstd_p, *rm, *rv, ws, out,
            B, C, H, W, Ho, Wo, *_layout(x), *_layout(uslots[0]), *_layout(out), K, K if R > 1 else 0,
            int(max_col), int(avg_col), int(id_col), *_bn_cols(bn_cols),
            _f64_bits(eps), _f64_bits(momentum), _f64_bits(P), _f64_bits(n), _f64_bits(n - 1),
            M=M, MB=mb, KB=_next_pow2(K), STRIDE=int(stride), HAS_MAX=max_col >= 0, HAS_AVG=avg_col >= 0,
            HAS_ID=id_col >= 0, BATCH_STATS=bool(batch_stats), UPDATE=update,
            BCH=min(_next_pow2(B), max(2, MAX_CHUNK // mb)), BLOCK=block, num_warps=_warps(block),
        )


def mixed_edge_bwd(x: Tensor, us: List[Tensor], w: Tensor, cols, stride: int, batch_stats: bool, mean: Tensor,
                   rstd: Tensor, grad_out: Tensor, dx: Tensor, dus: List[Tensor], grad_w: Tensor) -> None:
    """Backward of the mixed edge into ``dx``, ``dus`` and ``grad_w``; a reduction launch and an elementwise
    launch. See csrc/mixed_edge.h."""
    max_col, avg_col, id_col, bn_cols = cols
    M = len(us)
    B, C, H, W, Ho, Wo = _geometry(x, stride)
    K = w.shape[-1]
    R = w.numel() // K
    P = Ho * Wo
    n = B * P
    uslots = _slots(us, x)
    dslots = _slots(dus, dx)
    mb = _next_pow2(M)
    nt = _next_pow2(T_BN + M)
    has_max, has_avg, has_id = max_col >= 0, avg_col >= 0, id_col >= 0
    part = torch.empty((B * C, nt), dtype=w.dtype, device=x.device)
    tape = torch.empty((B, C, Ho, Wo), dtype=torch.int8, device=x.device) if has_max else part
    mean_p, rstd_p = _nonempty(mean, w), _nonempty(rstd, w)
    block_o, block_i = _block(P), min(MAX_BLOCK_DX, _block(H * W))
    per_row = R > 1
    rows = C if per_row else B * C
    with _on_device(x.device):
        _edge_bwd_reduce_kernel[(B * C,)](
            x, *uslots, mean_p, rstd_p, grad_out, part, tape, C, H, W, Ho, Wo,
            *_layout(x), *_layout(uslots[0]), *_layout(grad_out), M=M, MB=mb, NT=nt, STRIDE=int(stride), HAS_MAX=has_max, HAS_AVG=has_avg, HAS_ID=has_id,
            BLOCK=block_o, num_warps=_warps(block_o),
        )
        _edge_bwd_kernel[(B * C,)](
            *uslots, *dslots, w, mean_p, rstd_p, grad_out, part, tape, dx, grad_w,
            B, C, H, W, Ho, Wo, *_layout(x), *_layout(uslots[0]), *_layout(grad_out), K, K if per_row else 0,
            int(max_col), int(avg_col), int(id_col), *_bn_cols(bn_cols), _f64_bits(n),
            M=M, MB=mb, NT=nt, KB=_next_pow2(K), STRIDE=int(stride), HAS_MAX=has_max, HAS_AVG=has_avg,
            HAS_ID=has_id, BATCH_STATS=bool(batch_stats), PER_ROW=per_row,
            BCH=min(_next_pow2(B), max(2, MAX_CHUNK // 4)), RCH=min(_next_pow2(rows), max(2, MAX_CHUNK // nt)),
            BLOCK_O=block_o, BLOCK_I=block_i, num_warps=_warps(max(block_o, block_i)),
        )
