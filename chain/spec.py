"""The feature stack's layout: which source computes which named features, and how series are laid out.

Pure values, no I/O. A ``FeatureGroup`` is one source's block of features (a series of one orbit
direction, a SPOT pair's cell features, a stack's bands); the ``FeatureSpec`` is the groups in stack
order. Series groups are band-major (``<channel>_<YYYYMMDD>``, every date of a channel, then the
next channel); patch and temporal models ask the spec for a source's series in time-major order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FeatureGroup:
    source: str  # the registry name of the source that computes it
    label: str  # e.g. "S2", "S1_ASC", "SPOT", "STACK"
    names: tuple[str, ...]
    channels: tuple[str, ...] = ()  # a series: the per-date channels (names = channel x date, band-major)
    dates: tuple[dt.date, ...] = ()

    @property
    def is_series(self) -> bool:
        return bool(self.dates)

    def time_major(self, offset: int) -> list[list[int]]:
        """Stack indices of this series, one list per channel, each over the dates (``offset``: the group's first index)."""
        T = len(self.dates)
        return [[offset + c * T + t for t in range(T)] for c in range(len(self.channels))]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "label": self.label, "names": list(self.names), "channels": list(self.channels),
                "dates": [d.isoformat() for d in self.dates]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureGroup:
        return cls(d["source"], d["label"], tuple(d["names"]), tuple(d.get("channels", ())),
                   tuple(dt.date.fromisoformat(x) for x in d.get("dates", ())))


def series_group(source: str, label: str, channels: list[str], dates: list[dt.date], prefix: str = "") -> FeatureGroup:
    """A band-major series group: names ``<prefix><channel>_<YYYYMMDD>``."""
    names = tuple(f"{prefix}{c}_{d:%Y%m%d}" for c in channels for d in dates)
    return FeatureGroup(source, label, names, tuple(channels), tuple(dates))


@dataclass(frozen=True)
class FeatureSpec:
    groups: tuple[FeatureGroup, ...]
    method: str = "linear"  # gap-filling method of every series
    # the feature cube to read windows from (features.cache: zarr, once the cube step is done); not part of features.json
    cache: str | None = None

    @property
    def names(self) -> list[str]:
        return [n for g in self.groups for n in g.names]

    def of_source(self, source: str) -> list[tuple[int, FeatureGroup]]:
        """(stack offset, group) of every group of ``source``, in stack order."""
        out, offset = [], 0
        for g in self.groups:
            if g.source == source:
                out.append((offset, g))
            offset += len(g.names)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [g.to_dict() for g in self.groups], "method": self.method, "names": self.names}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(tuple(FeatureGroup.from_dict(g) for g in d["groups"]), d.get("method", "linear"))
