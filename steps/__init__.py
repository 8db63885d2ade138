"""The built-in steps, imported in pipeline order so that they register in that order."""

from steps import ingest, gapfill, features, split, sample, train, compare_models, classify, mosaic, regularize, vectorize, validate  # noqa: F401
