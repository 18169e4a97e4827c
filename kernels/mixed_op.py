"""Triton backend of the fused mixed op: the same contract as ``mixed_op_fwd_*`` / ``mixed_op_bwd_*`` in
csrc/mixed_op.h, as two plain Python launchers that write into caller-allocated outputs.

    mixed_op_fwd(ys, live, logits, noise, softmax, tau, hard, seed, offset, out, z_out)   -> one kernel launch
    mixed_op_bwd(ys, live, w, grad_out, grad_z, jacobian, tau, hard, dys, grad_w)         -> one kernel launch

Shapes (N = numel of one candidate, R rows of the weight table, M = N // R elements per row, K columns):
    ys[j], dys[j], out, grad_out   N elements, 1-d (a dense tensor's memory order), dtype f16 / bf16 / f32 / f64
    logits, noise, w, grad_z, z_out, grad_w   [R, K] contiguous, acc dtype (f32, or f64 when ys are f64)

Both kernels run on a 2-D grid (R, P): program (r, p) recomputes the K weights of row r (K is small, padded to
a power of two KB), then walks ITERS consecutive blocks of BLOCK elements of row r starting at element
p * ITERS * BLOCK. P = programs per row is kept <= MAX_PROGRAMS_PER_ROW so that the backward's final
per-row reduction of the P partial dot products is cheap.

Candidates are read in place (never stacked): up to MAX_CANDIDATES pointers are passed as separate arguments
(unused slots alias slot 0) and picked with compile-time branches inside ``tl.static_range`` loops.

Gumbel noise (softmax with no noise table) is drawn in-kernel exactly as csrc/philox.h does: Philox4x32-10 with
key (seed_lo, seed_hi) and counter (c_lo, c_hi, 0, 0), c = offset + r*K + k, first output word r32 -- i.e.
what ``tl.randint(seed, offset + i)`` returns on recent Triton. We call ``tl.philox`` with explicit uint32
counter words instead of ``tl.randint`` on a 64-bit offset, because older Triton releases run Philox4x64 for a
64-bit offset; the explicit form is the same stream on every version. u = ((r32 >> 9) + 0.5) * 2^-23 (exact in
f32) and g = -log(-log(u)) in the accumulation type, each log computed in f64 and rounded to it (for f32: a
correctly rounded logf), so the noise matches the C++ ``gumbel_noise<acc_t>`` independently of the GPU's fast
f32 log approximation.

Set TRITON_INTERPRET=1 before triton is imported to run these kernels on CPU tensors.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["mixed_op_fwd", "mixed_op_bwd", "MAX_CANDIDATES"]

MAX_CANDIDATES = 16  # live candidates per call (pointer slots Y0..Y15 / D0..D15)
BLOCK_FWD = 1024  # elements per block (upper bound; smaller rows use next_pow2(M), at least MIN_BLOCK)
BLOCK_BWD = 1024
MIN_BLOCK = 64
MAX_PROGRAMS_PER_ROW = 128  # bounds the partials workspace [R, P, K'] and the final reduction

_U64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------------------------------
# Small device helpers
# --------------------------------------------------------------------------------------------------------------
@triton.jit
def _pick(j: tl.constexpr, A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15):
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
    elif j == 7:
        r = A7
    elif j == 8:
        r = A8
    elif j == 9:
        r = A9
    elif j == 10:
        r = A10
    elif j == 11:
        r = A11
    elif j == 12:
        r = A12
    elif j == 13:
        r = A13
    elif j == 14:
        r = A14
    else:
        tl.static_assert(j == 15, "candidate slot out of range")
        r = A15
    return r


@triton.jit
def _col(w, cols, c):
    # w[c] as a scalar, for a small vector w indexed by cols and a (constexpr or runtime) index c.
    return tl.sum(tl.where(cols == c, w, 0.0), axis=0)


@triton.jit
def _one_hot_argmax(v, cols, cmask, KB: tl.constexpr):
    # one_hot(argmax v) over the K valid columns; ties go to the smallest index. A NaN in v (a NaN sample: NaN or
    # all -inf logits) makes every weight NaN, so that the output is NaN as the reference's is.
    vm = tl.where(cmask, v, float("-inf"))
    mx = tl.max(vm, axis=0)
    first = tl.min(tl.where(vm == mx, cols, KB), axis=0)
    nan = tl.sum(tl.where(cmask & (v != v), 1, 0), axis=0) > 0
    return tl.where(nan, float("nan"), tl.where(cols == first, 1.0, 0.0)).to(v.dtype)


@triton.jit
def _gumbel(seed, offset, idx, ACC: tl.constexpr):
    # Gumbel(0, 1) noise number idx (int64 tensor) of the stream (seed, offset), in ACC -- csrc/philox.h.
    c = offset.to(tl.uint64) + idx.to(tl.uint64)  # 64-bit counter, wraps like uint64_t
    c_lo = c.to(tl.uint32)  # truncation: low word
    c_hi = (c >> 32).to(tl.uint32)
    zero = c_lo * 0
    r32, _r1, _r2, _r3 = tl.philox(seed, c_lo, c_hi, zero, zero)  # key = (seed_lo, seed_hi), 10 rounds
    u = ((r32 >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07  # 2^-23; exact in f32, inside (0, 1)
    l1 = tl.log(u.to(tl.float64)).to(ACC)  # log(u) in ACC (for f32: a correctly rounded logf)
    l2 = tl.log((-l1).to(tl.float64)).to(ACC)  # log(-log(u))
    return -l2


@triton.jit
def _tau(tau_bits, ACC: tl.constexpr):
    # tau travels as the int64 bit pattern of the Python double (scalar float arguments are f32 in Triton).
    return tau_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)


# --------------------------------------------------------------------------------------------------------------
# Forward
#   softmax == false: w = logits;  softmax == true: z = softmax((logits + g) / tau) (row max subtracted),
#   z_out = z (written by program p == 0 of each row), w = hard ? one_hot(argmax z) : z.
#   out[r*M + m] = sum_j w[r, live[j]] * ys[j][r*M + m], accumulated in ACC and rounded once.
# --------------------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["L0", "L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8", "L9", "L10", "L11", "L12",
                               "L13", "L14", "L15", "ITERS", "seed", "offset", "tau_bits"])
def _mixed_op_fwd_kernel(
    # ys[j]: [N] (= [R, M] row-major) in the ys dtype, candidate column live[j]; slots >= NY alias Y0
    Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15,
    # live[j]: scalar column indices in [0, K); slots >= NY repeat L0
    L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15,
    LOGITS,  # [R, K] acc dtype: logits (softmax) or the weights themselves
    NOISE,  # [R, K] acc dtype: Gumbel noise table (aliases LOGITS unless HAS_NOISE)
    OUT,  # [N] ys dtype
    ZOUT,  # [R, K] acc dtype: soft sample z (aliases LOGITS unless WRITE_Z)
    M,  # elements per row (N // R)
    K,  # columns of the table
    ITERS,  # blocks walked by one program
    seed,  # Philox key (uint64 value)
    offset,  # Philox counter base (uint64 value)
    tau_bits,  # int64 bit pattern of tau
    NY: tl.constexpr,  # number of live candidates (1..16)
    KB: tl.constexpr,  # next_pow2(K)
    BLOCK: tl.constexpr,
    SOFTMAX: tl.constexpr,
    HARD: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    WRITE_Z: tl.constexpr,
):
    row = tl.program_id(0)
    pid = tl.program_id(1)
    ACC = LOGITS.dtype.element_ty  # f32 or f64

    # ---- the K weights of this row --------------------------------------------------------------------------
    cols = tl.arange(0, KB)
    cmask = cols < K
    tbase = row.to(tl.int64) * K
    lg = tl.load(LOGITS + tbase + cols, mask=cmask, other=0.0).to(ACC)
    if SOFTMAX:
        if HAS_NOISE:
            g = tl.load(NOISE + tbase + cols, mask=cmask, other=0.0).to(ACC)
        else:
            g = _gumbel(seed, offset, tbase + cols, ACC)
        x = (lg + g) / _tau(tau_bits, ACC)
        x = tl.where(cmask, x, float("-inf"))
        e = tl.exp(x - tl.max(x, axis=0))
        e = tl.where(cmask, e, 0.0)
        z = e / tl.sum(e, axis=0)
        if WRITE_Z:
            if pid == 0:  # exactly one program per row writes z
                tl.store(ZOUT + tbase + cols, z, mask=cmask)
        if HARD:
            w = _one_hot_argmax(z, cols, cmask, KB)
        else:
            w = z
    else:
        w = lg
    # per-candidate scalar weights, hoisted out of the element loop (slots >= NY are unused)
    w0 = _col(w, cols, L0)
    w1 = _col(w, cols, L1)
    w2 = _col(w, cols, L2)
    w3 = _col(w, cols, L3)
    w4 = _col(w, cols, L4)
    w5 = _col(w, cols, L5)
    w6 = _col(w, cols, L6)
    w7 = _col(w, cols, L7)
    w8 = _col(w, cols, L8)
    w9 = _col(w, cols, L9)
    w10 = _col(w, cols, L10)
    w11 = _col(w, cols, L11)
    w12 = _col(w, cols, L12)
    w13 = _col(w, cols, L13)
    w14 = _col(w, cols, L14)
    w15 = _col(w, cols, L15)

    # ---- the elements -----------------------------------------------------------------------------------------
    offs = tl.arange(0, BLOCK)
    rbase = row.to(tl.int64) * M
    cur = pid.to(tl.int64) * ITERS * BLOCK  # element index inside the row, int64
    for _it in range(0, ITERS):
        idx = cur + offs
        mask = idx < M
        acc = tl.zeros([BLOCK], dtype=ACC)
        for j in tl.static_range(NY):
            yp = _pick(j, Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15)
            wj = _pick(j, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15)
            y = tl.load(yp + rbase + idx, mask=mask, other=0.0).to(ACC)
            acc += wj * y
        tl.store(OUT + rbase + idx, acc.to(OUT.dtype.element_ty), mask=mask)
        cur += BLOCK


# --------------------------------------------------------------------------------------------------------------
# Backward (VJP).  Per row r (elements r*M .. r*M+M-1), G = grad_out, out = sum_j w_used[live[j]] Y_j:
#
#   dL/dY_j        = w_used[r, live[j]] * G
#   dw[r, k]       = <Y_j, G>_row  if k == live[j]       (sum over the M elements of row r)
#                  = 0             if k is dead          (zero op: contributes nothing to out)
#                    (+ grad_z[r, k] when grad_z is given: z is also an output of the forward)
#   jacobian == false (w was given):   grad_w = dw
#   jacobian == true  (w = z = softmax(x), x = (a + g) / tau; the forward used w_used = hard ? one_hot(argmax z)
#                      : z, with a straight-through gradient in the hard case, so dL/dz = dw either way):
#       dz_i/dx_k = z_i (delta_ik - z_k),  dx_k/da_k = 1 / tau,  g constant
#       grad_w[r, k] = sum_i dw_i z_i (delta_ik - z_k) / tau = z_k (dw_k - <z, dw>) / tau
#
# Deterministic reduction of <Y_j, G>_row: program (r, p) accumulates its blocks in a fixed order into
# partial[r, p, j] (workspace, no atomics on it), then increments counter[r] (atomic, acq_rel, returns the old
# value). The program that sees old == P - 1 is the last of its row: every other program's partials are visible
# to it, and it sums partial[r, 0..P-1, j] in order p = 0, 1, ..., P-1, adds grad_z, applies the Jacobian, writes
# grad_w[r, :] and resets counter[r] to 0 for the next launch. The result does not depend on scheduling.
# --------------------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["L0", "L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8", "L9", "L10", "L11", "L12",
                               "L13", "L14", "L15", "P", "ITERS", "tau_bits"])
def _mixed_op_bwd_kernel(
    # ys[j]: [N] (= [R, M] row-major) in the ys dtype, candidate column live[j]; slots >= NY alias Y0
    Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15,
    # dys[j]: [N] ys dtype, written; slots >= NY alias D0
    D0, D1, D2, D3, D4, D5, D6, D7, D8, D9, D10, D11, D12, D13, D14, D15,
    # live[j]: scalar column indices in [0, K); slots >= NY repeat L0
    L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15,
    W,  # [R, K] acc dtype: the weights (jacobian == false) or the soft sample z (jacobian == true)
    G,  # [N] ys dtype: grad_out
    GZ,  # [R, K] acc dtype: grad_z (aliases W unless HAS_GZ)
    GW,  # [R, K] acc dtype: grad_w, written by the last program of each row
    PART,  # [R, P, NYB] acc dtype workspace: partial[r, p, j] = <Y_j, G> over program p's elements of row r
    CNT,  # [>= R] int32: arrival counters, 0 on entry and reset to 0 on exit
    M,  # elements per row (N // R)
    K,  # columns of the table
    P,  # programs per row (grid axis 1)
    ITERS,  # blocks walked by one program
    tau_bits,  # int64 bit pattern of tau
    NY: tl.constexpr,  # number of live candidates (1..16)
    NYB: tl.constexpr,  # next_pow2(NY)
    KB: tl.constexpr,  # next_pow2(K)
    BLOCK: tl.constexpr,
    JACOBIAN: tl.constexpr,
    HARD: tl.constexpr,
    HAS_GZ: tl.constexpr,
):
    row = tl.program_id(0)
    pid = tl.program_id(1)
    ACC = W.dtype.element_ty  # f32 or f64

    # ---- w_used of this row -----------------------------------------------------------------------------------
    cols = tl.arange(0, KB)
    cmask = cols < K
    tbase = row.to(tl.int64) * K
    wrow = tl.load(W + tbase + cols, mask=cmask, other=0.0).to(ACC)
    if JACOBIAN and HARD:
        wu = _one_hot_argmax(wrow, cols, cmask, KB)
    else:
        wu = wrow
    w0 = _col(wu, cols, L0)
    w1 = _col(wu, cols, L1)
    w2 = _col(wu, cols, L2)
    w3 = _col(wu, cols, L3)
    w4 = _col(wu, cols, L4)
    w5 = _col(wu, cols, L5)
    w6 = _col(wu, cols, L6)
    w7 = _col(wu, cols, L7)
    w8 = _col(wu, cols, L8)
    w9 = _col(wu, cols, L9)
    w10 = _col(wu, cols, L10)
    w11 = _col(wu, cols, L11)
    w12 = _col(wu, cols, L12)
    w13 = _col(wu, cols, L13)
    w14 = _col(wu, cols, L14)
    w15 = _col(wu, cols, L15)

    # ---- dY_j = w_used[live[j]] * G and this program's partial dots <Y_j, G> -------------------------------------
    jidx = tl.arange(0, NYB)
    dots = tl.zeros([NYB], dtype=ACC)
    offs = tl.arange(0, BLOCK)
    rbase = row.to(tl.int64) * M
    cur = pid.to(tl.int64) * ITERS * BLOCK
    for _it in range(0, ITERS):
        idx = cur + offs
        mask = idx < M
        g = tl.load(G + rbase + idx, mask=mask, other=0.0).to(ACC)
        for j in tl.static_range(NY):
            yp = _pick(j, Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15)
            dp = _pick(j, D0, D1, D2, D3, D4, D5, D6, D7, D8, D9, D10, D11, D12, D13, D14, D15)
            wj = _pick(j, w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15)
            tl.store(dp + rbase + idx, (wj * g).to(dp.dtype.element_ty), mask=mask)
            y = tl.load(yp + rbase + idx, mask=mask, other=0.0).to(ACC)
            dots += tl.where(jidx == j, tl.sum(y * g, axis=0), 0.0)
        cur += BLOCK

    # ---- publish the partials; the last program of the row reduces them in a fixed order -------------------------
    prow = row.to(tl.int64) * P
    tl.store(PART + (prow + pid) * NYB + jidx, dots)
    tl.debug_barrier()  # every thread's partial store precedes the (single-thread) release below
    old = tl.atomic_add(CNT + row, 1, sem="acq_rel")
    if old == P - 1:
        tot = tl.zeros([NYB], dtype=ACC)
        for p in range(0, P):  # fixed order p = 0 .. P-1: deterministic
            tot += tl.load(PART + (prow + p) * NYB + jidx, cache_modifier=".cg")
        dw = tl.zeros([KB], dtype=ACC)
        for j in tl.static_range(NY):
            lj = _pick(j, L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15)
            dj = tl.sum(tl.where(jidx == j, tot, 0.0), axis=0)
            dw += tl.where(cols == lj, dj, 0.0)  # dead columns stay 0
        if HAS_GZ:
            dw += tl.load(GZ + tbase + cols, mask=cmask, other=0.0).to(ACC)
        if JACOBIAN:
            z = wrow  # padded columns are 0
            gw = z * (dw - tl.sum(z * dw, axis=0)) / _tau(tau_bits, ACC)
        else:
            gw = dw
        tl.store(GW + tbase + cols, gw, mask=cmask)
        tl.store(CNT + row, 0)  # ready for the next launch (stream-ordered)


# --------------------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------------------
_COUNTERS: Dict[Tuple[torch.device, int], Tensor] = {}
_SM_COUNT: Dict[int, int] = {}


def _next_pow2(n: int) -> int:
    """Smallest power of two >= n, at least 2 (keeps every tl.arange / reduction at two or more elements)."""
    return max(2, 1 << max(0, int(n) - 1).bit_length())


def _tau_bits(tau: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(tau)))[0]


def _target_programs(device: torch.device) -> int:
    if device.type != "cuda":
        return 64
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return 4 * _SM_COUNT[idx]


def _plan(M: int, R: int, block_max: int, device: torch.device) -> Tuple[int, int, int]:
    """(BLOCK, P programs per row, ITERS blocks per program) for rows of M elements."""
    block = min(block_max, max(MIN_BLOCK, _next_pow2(M)))
    nblocks = triton.cdiv(M, block)
    want = max(1, triton.cdiv(_target_programs(device), R))
    p = max(1, min(nblocks, want, MAX_PROGRAMS_PER_ROW))
    iters = triton.cdiv(nblocks, p)
    p = triton.cdiv(nblocks, iters)
    return block, p, iters


def _counter(device: torch.device, rows: int) -> Tensor:
    """Per-(device, stream) int32 arrival counters, zeroed once at creation and left at zero by every launch.

    Under CUDA-graph capture the cache is bypassed: fresh zeroed counters, whose zeroing the graph records."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return torch.zeros(rows, dtype=torch.int32, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device, stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < rows:
        n = max(rows, 256 if buf is None else 2 * buf.numel())
        buf = torch.zeros(n, dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf


def _slots(ts: List[Tensor], name: str) -> List[Tensor]:
    if len(ts) > MAX_CANDIDATES:
        raise ValueError(f"{name}: the Triton backend supports at most {MAX_CANDIDATES} live candidates, "
                         f"got {len(ts)}")
    return list(ts) + [ts[0]] * (MAX_CANDIDATES - len(ts))


def _live_slots(live: List[int]) -> List[int]:
    live = [int(c) for c in live]
    return live + [live[0]] * (MAX_CANDIDATES - len(live))


class _on_device:
    """Make ``device`` current while launching (Triton launches on the current CUDA device)."""

    def __init__(self, device: torch.device):
        self.ctx = None
        if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
            self.ctx = torch.cuda.device(device.index)

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False


def mixed_op_fwd(ys: List[Tensor], live: List[int], logits: Tensor, noise: Optional[Tensor], softmax: bool,
                 tau: float, hard: bool, seed: int, offset: int, out: Tensor, z_out: Optional[Tensor]) -> None:
    """Forward of the mixed op into ``out`` (and ``z_out`` when softmax); one kernel launch. See csrc/mixed_op.h."""
    yslots = _slots(ys, "ys")
    K = logits.shape[-1]
    R = logits.numel() // K
    N = ys[0].numel()
    M = N // R
    block, p, iters = _plan(M, R, BLOCK_FWD, out.device)
    has_noise = bool(softmax) and noise is not None
    write_z = bool(softmax) and z_out is not None
    with _on_device(out.device):
        _mixed_op_fwd_kernel[(R, p)](
            *yslots, *_live_slots(live),
            logits, noise if has_noise else logits, out, z_out if write_z else logits,
            M, K, iters, int(seed) & _U64, int(offset) & _U64, _tau_bits(tau),
            NY=len(ys), KB=_next_pow2(K), BLOCK=block, SOFTMAX=bool(softmax), HARD=bool(hard) and bool(softmax),
            HAS_NOISE=has_noise, WRITE_Z=write_z,
        )


def mixed_op_bwd(ys: List[Tensor], live: List[int], w: Tensor, grad_out: Tensor, grad_z: Optional[Tensor],
                 jacobian: bool, tau: float, hard: bool, dys: List[Tensor], grad_w: Tensor) -> None:
    """Backward of the mixed op into ``dys`` and ``grad_w``; one kernel launch. See csrc/mixed_op.h."""
    yslots = _slots(ys, "ys")
    dslots = _slots(dys, "dys")
    K = w.shape[-1]
    R = w.numel() // K
    N = ys[0].numel()
    M = N // R
    block, p, iters = _plan(M, R, BLOCK_BWD, grad_out.device)
    nyb = _next_pow2(len(ys))
    partials = torch.empty((R, p, nyb), dtype=w.dtype, device=w.device)
    counter = _counter(w.device, R)
    with _on_device(w.device):
        _mixed_op_bwd_kernel[(R, p)](
            *yslots, *dslots, *_live_slots(live),
            w, grad_out, grad_z if grad_z is not None else w, grad_w, partials, counter,
            M, K, p, iters, _tau_bits(tau),
            NY=len(ys), NYB=nyb, KB=_next_pow2(K), BLOCK=block, JACOBIAN=bool(jacobian),
            HARD=bool(hard) and bool(jacobian), HAS_GZ=grad_z is not None,
        )
