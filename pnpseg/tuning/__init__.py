"""Mask-free hyper-parameter search with the CLIP reward (paper §3.4, eq. 4–5)."""
