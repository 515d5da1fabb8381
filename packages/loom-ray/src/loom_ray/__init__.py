"""loom-ray: Loom as a Ray Data stage — ``LoomMapper`` for ``Dataset.map_batches``.

Level 3: builds on loom-core (and what it brings) and ``ray[data]``. Nothing else in Loom
imports it.
"""

from ._batch import OUTPUT_COLUMNS
from ._mapper import LoomMapper

__version__ = "0.1.0"

__all__ = ["OUTPUT_COLUMNS", "LoomMapper"]
