"""Where every product and intermediate lives in the work folder: one place names them all.

Steps declare their outputs from here and read their upstream's outputs from here, so no step
imports another and no path is spelled twice. Pure naming: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def confusion_png_name(run: int) -> str:
    """The confusion matrix figure of ``run`` in the final folder (validate writes it; the HTML report embeds it)."""
    return f"confusion_Seed_{run}.png"


@dataclass(frozen=True)
class Paths:
    root: Path

    def step(self, name: str) -> Path:
        """A step's own folder (its intermediates; removed when the step starts over)."""
        return self.root / name

    # ---- ingest -----------------------------------------------------------------------------------
    @property
    def catalog(self) -> Path:
        return self.root / "ingest" / "catalog.json"

    @property
    def reference(self) -> Path:
        return self.root / "ingest" / "reference.gpkg"

    @property
    def classes(self) -> Path:
        return self.root / "ingest" / "classes.json"

    @property
    def tiled_copies(self) -> Path:
        """Tiled copies of the inputs slow to read tile by tile (``inputs.tiled_copies``); the catalogue names them."""
        return self.root / "ingest" / "tiled"

    # ---- gapfill, features ------------------------------------------------------------------------
    @property
    def dates(self) -> Path:
        """Each series source's regular output dates (the gapfill step)."""
        return self.root / "gapfill" / "dates.json"

    @property
    def features(self) -> Path:
        return self.root / "features" / "features.json"

    @property
    def cube(self) -> Path:
        return self.root / "features" / "cube"

    @property
    def feature_cache(self) -> Path:
        """The Zarr feature cube of ``features.cache: zarr`` (chain.cube); its tiles' markers beside it."""
        return self.root / "features" / "cube.zarr"

    @property
    def feature_cache_tiles(self) -> Path:
        """One marker per tile of the cube that is complete (chain.cube.fill_tile)."""
        return self.root / "features" / "cube.zarr.tiles"

    # ---- segment, objects (segmentation.method set) ---------------------------------------------------
    @property
    def segment_tiles(self) -> Path:
        """Each tile's segmentation (core + halo labels), the resume unit of the segment step."""
        return self.root / "segment" / "tiles"

    @property
    def segment_id_tiles(self) -> Path:
        return self.root / "segment" / "ids"

    @property
    def segment_summary(self) -> Path:
        return self.root / "segment" / "summary.json"

    @property
    def segments(self) -> Path:
        return self.final / "segments.tif"

    @property
    def segments_vector(self) -> Path:
        return self.final / "segments.gpkg"

    @property
    def object_tiles(self) -> Path:
        return self.root / "objects" / "tiles"

    @property
    def objects(self) -> Path:
        """The object table (chain.objects): one row per object; its features in ``objects_X.npy`` beside it."""
        return self.root / "objects" / "objects.npz"

    @property
    def object_summary(self) -> Path:
        return self.root / "objects" / "summary.json"

    # ---- carryover, changes (update: section) --------------------------------------------------------
    @property
    def carried_reference(self) -> Path:
        """Last year's reference polygons scored as unchanged: this year's reference in an update."""
        return self.root / "carryover" / "reference.gpkg"

    @property
    def carry_scores(self) -> Path:
        return self.root / "carryover" / "scores.csv"

    @property
    def carry_summary(self) -> Path:
        return self.root / "carryover" / "summary.json"

    @property
    def flagged_reference(self) -> Path:
        """The polygons scored as changed since last year, with their scores, for a person to review."""
        return self.final / "reference_flagged.gpkg"

    @property
    def change_dir(self) -> Path:
        """The change since last year's map (changes step): matrix, change raster, pages."""
        return self.final / "change"

    @property
    def update_report(self) -> Path:
        return self.final / "update.html"

    # ---- split, sample ----------------------------------------------------------------------------
    @property
    def split(self) -> Path:
        return self.root / "split" / "split.csv"

    @property
    def sample_tiles(self) -> Path:
        return self.root / "sample" / "tiles"

    @property
    def samples(self) -> Path:
        return self.root / "sample" / "pixels.npz"

    @property
    def sample_summary(self) -> Path:
        return self.root / "sample" / "summary.json"

    # ---- train, compare_models --------------------------------------------------------------------
    def model(self, run: int) -> Path:
        """The folder of run ``run``'s model (its files and manifest.json)."""
        return self.root / "train" / f"run_{run}"

    def pixel_model(self, run: int) -> Path:
        """Object-based runs: the same model type trained on pixels, for the object-vs-pixel comparison."""
        return self.root / "train" / "pixels" / f"run_{run}"

    def compared_model(self, index: int, run: int) -> Path:
        return self.root / "compare_models" / f"model_{index}" / f"run_{run}"

    @property
    def comparison(self) -> Path:
        return self.root / "compare_models" / "comparison.json"

    # ---- classify, mosaic, regularize, vectorize (tiles) -------------------------------------------
    def classified_tiles(self, run: int) -> Path:
        return self.root / "classify" / f"run_{run}"

    def pixel_classified_tiles(self, run: int) -> Path:
        return self.root / "classify" / "pixels" / f"run_{run}"

    def object_classes(self, run: int) -> Path:
        """Object-based runs: each object's class and confidence (the map's, per object)."""
        return self.root / "classify" / f"run_{run}" / "objects.npz"

    @property
    def fusion_tiles(self) -> Path:
        return self.root / "mosaic" / "fusion"

    def regularized_tiles(self, run: int) -> Path:
        return self.root / "regularize" / f"run_{run}"

    def vector_tiles(self, run: int) -> Path:
        return self.root / "vectorize" / f"run_{run}"

    # ---- final products ---------------------------------------------------------------------------
    @property
    def final(self) -> Path:
        return self.root / "final"

    def class_map(self, run: int) -> Path:
        return self.final / f"Classif_Seed_{run}.tif"

    def confidence_map(self, run: int) -> Path:
        return self.final / f"Confidence_Seed_{run}.tif"

    def probability_map(self, run: int) -> Path:
        return self.final / f"Probabilities_Seed_{run}.tif"

    def pixel_class_map(self, run: int) -> Path:
        """Object-based runs: the pixel map of the same run, for the comparison."""
        return self.final / "pixels" / f"Classif_Seed_{run}.tif"

    def pixel_confidence_map(self, run: int) -> Path:
        return self.final / "pixels" / f"Confidence_Seed_{run}.tif"

    def object_vector_map(self, run: int) -> Path:
        """Object-based runs: the objects with their class, name, confidence and area."""
        return self.final / f"Classif_Seed_{run}_objects.gpkg"

    def regularized_map(self, run: int) -> Path:
        return self.final / f"Classif_Seed_{run}_regularized.tif"

    def vector_map(self, run: int) -> Path:
        return self.final / f"Classif_Seed_{run}.gpkg"

    @property
    def fusion_map(self) -> Path:
        return self.final / "Classif_Fusion.tif"

    @property
    def agreement_map(self) -> Path:
        return self.final / "Agreement_Fusion.tif"

    @property
    def validity_map(self) -> Path:
        return self.final / "PixelsValidity.tif"

    @property
    def nomenclature(self) -> Path:
        return self.final / "nomenclature.csv"

    @property
    def results(self) -> Path:
        return self.final / "RESULTS.txt"

    @property
    def metrics(self) -> Path:
        return self.final / "metrics.json"

    @property
    def report(self) -> Path:
        return self.final / "report.html"

    def confusion_png(self, run: int) -> Path:
        return self.final / confusion_png_name(run)


def style(map_path: Path) -> Path:
    """The QGIS style beside a class map."""
    return map_path.with_suffix(".qml")
