"""Data sources: every source yields an :class:`ImageData` (uint8 images, optional labels).

Example:
    >>> from gsimclr.data import load_split
    >>> load_split("digits", "test").images.shape
    (360, 32, 32, 3)
"""

from gsimclr.data.dataset import ImageData
from gsimclr.data.sources import describe_sources, load_split

__all__ = ["ImageData", "describe_sources", "load_split"]
