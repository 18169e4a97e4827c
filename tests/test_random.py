"""The internal Gumbel noise (reproducible, the right distribution) and deterministic reductions."""
from __future__ import annotations

import math

import pytest
import torch

import snas_fast

from testing import BACKEND_DEVICES, BACKEND_IDS, interpreted


def one_hot_candidates(B, K, device):
    """ys[k] = column k of the identity, [B, K]: then out[b] = Z[b] and argmax out = argmax Z."""
    eye = torch.eye(K, device=device)
    return [eye[k].expand(B, K).contiguous() for k in range(K)]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
def test_internal_noise_is_reproducible_under_manual_seed(backend, device):
    ys = one_hot_candidates(3, 5, device)
    log_alpha = torch.randn(5, device=device)
    with snas_fast.use_backend(backend):
        torch.manual_seed(3)
        a = snas_fast.gumbel_mixed_op(ys, log_alpha, 1.0)
        b = snas_fast.gumbel_mixed_op(ys, log_alpha, 1.0)
        torch.manual_seed(3)
        c = snas_fast.gumbel_mixed_op(ys, log_alpha, 1.0)
    assert torch.equal(a, c), "same seed, different sample"
    assert not torch.equal(a, b), "two draws in a row gave the same sample"


def _assert_frequencies(counts, probs, draws):
    """Every class frequency within 5 standard deviations of its Gumbel-max probability."""
    freq = counts.double() / draws
    sd = torch.sqrt(probs * (1 - probs) / draws)
    assert (freq - probs).abs().le(5 * sd + 1e-12).all(), f"frequencies {freq.tolist()} vs {probs.tolist()}"


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
def test_gumbel_max_property_per_example_rows(backend, device):
    """argmax Z over B independent rows ~ Categorical(softmax(log_alpha)): the counter covers every logit."""
    K, B = 4, 2048 if interpreted(backend, device) else 8192
    logits = torch.tensor([1.5, 0.0, -1.0, 0.7], dtype=torch.float64)
    log_alpha = logits.float().to(device).expand(B, K).contiguous()
    torch.manual_seed(0)
    with snas_fast.use_backend(backend):
        _, z = snas_fast.gumbel_mixed_op(one_hot_candidates(B, K, device), log_alpha, 1.0, return_weights=True)
    counts = torch.bincount(z.argmax(-1).cpu(), minlength=K)
    _assert_frequencies(counts, torch.softmax(logits, 0), B)


@pytest.mark.parametrize("backend,device", [p for p in BACKEND_DEVICES if not interpreted(*p)],
                         ids=[i for p, i in zip(BACKEND_DEVICES, BACKEND_IDS) if not interpreted(*p)])
def test_gumbel_max_property_over_calls(backend, device):
    """One [K] sample per call, thousands of calls: successive (seed, offset) draws are independent."""
    K, draws = 5, 3000
    logits = torch.tensor([0.2, -0.5, 1.0, 0.0, 0.4], dtype=torch.float64)
    log_alpha = logits.float().to(device)
    ys = one_hot_candidates(1, K, device)
    torch.manual_seed(1)
    counts = torch.zeros(K, dtype=torch.long)
    with snas_fast.use_backend(backend):
        for _ in range(draws):
            out = snas_fast.gumbel_mixed_op(ys, log_alpha, 1.0, hard=True)
            counts[out.argmax().item() % K] += 1
    _assert_frequencies(counts, torch.softmax(logits, 0), draws)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
def test_backward_is_deterministic(backend, device):
    """Two backward passes give bit-identical gradients (no atomics on the accumulators)."""
    n = 3000 if interpreted(backend, device) else 200_003
    g = torch.Generator().manual_seed(0)
    ys = [torch.randn(n, generator=g).to(device).requires_grad_() for _ in range(4)]
    log_alpha = torch.randn(4, device=device, requires_grad=True)
    noise = torch.rand(4, device=device)
    grads = []
    for _ in range(2):
        with snas_fast.use_backend(backend):
            out = snas_fast.gumbel_mixed_op(ys, log_alpha, 0.5, noise=noise)
        grads.append(torch.autograd.grad(out.square().sum(), ys + [log_alpha]))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@pytest.mark.skipif("cpu" not in snas_fast.available_backends(), reason="extension not built")
def test_cpu_gradients_do_not_depend_on_the_thread_count():
    g = torch.Generator().manual_seed(0)
    ys = [torch.randn(300_007, generator=g).requires_grad_() for _ in range(3)]
    w = torch.rand(3, requires_grad=True)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, max(2, threads)):
            torch.set_num_threads(t)
            with snas_fast.use_backend("cpu"):
                out = snas_fast.mixed_op(ys, w)
            results.append(torch.autograd.grad(out.square().sum(), [w])[0])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])
