"""Memorization-Aware Training (MAT): the held-out logit shift of Algorithm 1."""
