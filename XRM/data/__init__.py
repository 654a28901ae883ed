"""Datasets: the registry, feature/synthetic/image/text datasets, and their preparation."""
