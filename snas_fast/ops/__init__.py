"""The op layer: the fused mixed ops, their registration with torch, the choice of backend, the eager reference and
generic recompute helpers. It imports nothing from the rest of snas_fast (spaces, search, engine, viz): a one-shot
NAS code base can take it alone. ``torch.ops.snas_fast.*`` exist once :mod:`snas_fast.ops.registry` is imported
(any of the functions below imports it).

- :func:`mixed_op` ``(ys [K x [*S]], weights [K] | [B, K]) -> [*S]``: the weighted sum of K candidate outputs.
- :func:`gumbel_mixed_op`: the same under a Gumbel-softmax sample of ``log_alpha`` (soft or hard).
- :func:`mixed_edge`: the deep-fused edge (pools, identity and affine-free BatchNorm tails folded in).
- :func:`fuse_mixed_ops`, :func:`unfuse_mixed_ops`, :func:`fuse_summary`: the deep-fused edge in someone else's
  DARTS-family search network, in place.
- :class:`FusedMixedOp`, :class:`Zero`, :func:`is_zero_op`: module front ends.
- :func:`use_backend`, :func:`available_backends`: ``cuda``, ``triton``, ``cpu`` or ``reference``.
"""
from .._lazy import lazy_attributes

__all__ = [
    "FusedMixedOp",
    "Zero",
    "available_backends",
    "gumbel_mixed_op",
    "fuse_mixed_ops",
    "fuse_summary",
    "is_zero_op",
    "mixed_edge",
    "mixed_op",
    "reference",
    "unfuse_mixed_ops",
    "use_backend",
]

# Imported on first use: the pure parts (zero, recompute, reference) without the compiled extension, which
# ``registry`` (imported by ``functional``) loads and registers with torch.
__getattr__, __dir__ = lazy_attributes(__name__, {
    "reference": ".reference",
    "registry": ".registry",
    "_backend": "._backend",
    "available_backends": "._backend:available_backends",
    "use_backend": "._backend:use_backend",
    "mixed_op": ".functional:mixed_op",
    "gumbel_mixed_op": ".functional:gumbel_mixed_op",
    "mixed_edge": ".functional:mixed_edge",
    "fuse_mixed_ops": ".fuse:fuse_mixed_ops",
    "unfuse_mixed_ops": ".fuse:unfuse_mixed_ops",
    "fuse_summary": ".fuse:fuse_summary",
    "FusedMixedOp": ".modules:FusedMixedOp",
    "Zero": ".zero:Zero",
    "is_zero_op": ".zero:is_zero_op",
})
