"""TFDS-style split strings, for every source.

`"train"`, `"test"`, `"train[:90%]"`, `"train[45000:]"`, `"train[-10%:]"` and unions such as
`"train[:10%]+test"` select the same examples as `tensorflow_datasets` would from the same source
order: percent bounds are rounded to the closest example, bounds may be negative, and a bound
beyond the split is an error. Sources that are not TFDS (pickles, IDX files, folders, sklearn)
use this module instead of TFDS, so the strings mean the same everywhere.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping

import numpy as np

_PART = re.compile(r"^(?P<name>[\w-]+)(\[(?P<start>[^:\[\]]*):(?P<stop>[^:\[\]]*)\])?$")
_BOUND = re.compile(r"^(?P<value>-?\d+(\.\d*)?)(?P<pct>%?)$")
_FORMAT = "'name' or 'name[start:stop]' (integers or percents), joined with '+'"


@dataclasses.dataclass(frozen=True)
class SplitPart:
    """One `name[start:stop]` term; bounds are absolute counts or percents."""

    name: str
    start: float | None = None
    stop: float | None = None
    percent: bool = False

    def resolve(self, num_examples: int) -> slice:
        """The selected positions in a split of `num_examples` examples, as a step-1 slice."""
        bounds = []
        for bound in (self.start, self.stop):
            if bound is None:
                bounds.append(None)
                continue
            if self.percent:
                bound = round(bound * num_examples / 100)
            if abs(bound) > num_examples:
                raise ValueError(
                    f"Split {self!s} is out of range: {self.name!r} has {num_examples} examples."
                )
            bounds.append(int(bound))
        return slice(*slice(*bounds).indices(num_examples)[:2])

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.name
        unit = "%" if self.percent else ""

        def fmt(b):
            return "" if b is None else f"{b:g}{unit}"

        return f"{self.name}[{fmt(self.start)}:{fmt(self.stop)}]"


def parse(spec: str) -> list[SplitPart]:
    """Parses a split string into its `+`-joined parts."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"split must be a non-empty string like 'train[:90%]'; got {spec!r}.")
    parts = []
    for text in re.split(r"\s*\+\s*", spec.strip()):
        match = _PART.match(text.replace(" ", ""))
        if not match:
            raise ValueError(f"Unrecognised split {spec!r}: expected {_FORMAT}.")
        bounds, units = [], set()
        for text_bound in (match["start"], match["stop"]):
            if not text_bound:
                bounds.append(None)
                continue
            bound = _BOUND.match(text_bound)
            if not bound or (not bound["pct"] and "." in bound["value"]):
                raise ValueError(f"Unrecognised bound {text_bound!r} in split {spec!r}.")
            units.add(bool(bound["pct"]))
            bounds.append(float(bound["value"]) if bound["pct"] else int(bound["value"]))
        if len(units) > 1:
            raise ValueError(f"Split {spec!r} mixes percents and absolute bounds in one slice.")
        parts.append(SplitPart(match["name"], *bounds, percent=units == {True}))
    return parts


def names(parts: list[SplitPart], available: Collection[str]) -> list[str]:
    """The distinct split names of `parts`, in order, each checked to be `available`."""
    for part in parts:
        if part.name not in available:
            raise ValueError(
                f"Unknown split {part.name!r}; this dataset has splits {sorted(available)}."
            )
    return list(dict.fromkeys(part.name for part in parts))


def select(parts: list[SplitPart], sizes: Mapping[str, int]) -> list[tuple[str, slice]]:
    """`(split name, positions)` for each part, checked against the source's split sizes."""
    names(parts, sizes)
    return [(part.name, part.resolve(sizes[part.name])) for part in parts]


def stratified_order(labels) -> np.ndarray:
    """The order that spreads each class's examples evenly over a list: contiguous slices
    (`"train[90%:]"`, `limit=`) then hold about each class's share instead of the last classes.

    The j-th of a class's n examples (in their given order) sits at `(j + 0.5) / n` of the way.

    Example:
        >>> stratified_order([0, 0, 1, 1]).tolist()
        [0, 2, 1, 3]
    """
    labels = np.asarray(labels)
    positions = np.empty(len(labels))
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        positions[where] = (np.arange(len(where)) + 0.5) / len(where)
    return np.lexsort((labels, positions))
