"""Triton kernels of snas_fast, installed as snas_fast.kernels."""
