"""Patch-based models (torch and flattened-patch RF): inputs, networks, trainer, inference."""
