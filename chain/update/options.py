"""The ``update:`` config section (``chain update --previous`` sets ``update.previous``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from chain.schema import PathFromConfig, Section


class SiameseConfig(Section):
    """The change detector: a shared encoder over both years' S2 series summaries around a pixel."""

    patch_px: int = Field(5, ge=1, le=31)  # cells a side around each sampled pixel
    cell_m: float = Field(10.0, gt=0)  # a patch cell: the features are computed on cells of this size (S2's 10 m)
    points_per_polygon: int = Field(16, ge=1)  # pixels drawn inside each polygon (its score is their mean)
    width: int = Field(64, ge=4)  # conv channels
    descriptor: int = Field(32, ge=4)  # length of the L2-normalised descriptor
    epochs: int = Field(40, ge=1)
    max_pairs: int = Field(100_000, ge=100)  # pixel pairs an epoch sees at most (a random draw each epoch): large references
    batch_size: int = Field(64, ge=4)  # places per batch: each one's other-year view is its positive, the others negatives
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(0.1, gt=0)
    # cross-fitting: the polygons in this many folds, each scored (and its retrieval measured) by an encoder trained on
    # the other folds only. Trained on a polygon, the encoder learns its two years as "the same place", changed or not
    folds: int = Field(5, ge=2, le=20)

    @field_validator("patch_px")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd (a pixel in the middle), e.g. {v + 1}")
        return v


class PruneConfig(Section):
    """Structured filter pruning of the fine-tuned network (torch-pruning), before fine-tuning."""

    ratio: float = Field(0.3, gt=0, lt=1)  # share of the convolution filters removed
    # l1: filters with the smallest weight norms; activation_entropy: filters whose activations on this year's
    # training patches carry the least information (entropy of their histogram)
    criterion: Literal["l1", "activation_entropy"] = "l1"


class UpdateConfig(Section):
    """This year's run as an update of last year's (``chain update CONFIG --previous DIR``)."""

    previous: PathFromConfig | None = None  # last year's work folder (a finished `chain run`)
    previous_config: PathFromConfig | None = None  # last year's config: `chain update` brings that run up to date first
    # polygons whose score is below it are flagged (not carried over); auto: more than 2.5 robust standard
    # deviations (1.4826 x MAD) below the median score, i.e. an outlier among mostly unchanged polygons
    threshold: float | Literal["auto"] = "auto"
    max_flagged_share: float = Field(0.3, gt=0, le=1)  # more flagged than this: stop and ask for a review
    siamese: SiameseConfig = SiameseConfig()
    finetune: bool = True  # neural networks start from last year's weights (same type and classes); RF is retrained
    lr_factor: float = Field(0.3, gt=0, le=1)  # fine-tuning learning rate = model.lr x this
    train_share: float = Field(1.0, gt=0, le=1)  # share of each class's carried-over training pixels used (studies)
    prune: PruneConfig | None = None
    min_confidence: int = Field(60, ge=0, le=100)  # the change matrix counts pixels at least this confident in both years
