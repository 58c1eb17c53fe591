"""Training data, the low-field degradation and convolutional dictionary learning.

  adacsc.training.volumes   source volumes (Debian mricron-data) and world-coordinate slicing
  adacsc.training.slices    the splits: load_split(name, size) -> complex64 [N, size, size], records
  adacsc.training.lowfield  y = S F x + n on the super-resolution grid (training / test settings)
  adacsc.training.cdl       convolutional dictionary learning (`adacsc learn-dictionary`)

See docs/DATA.md for where every image comes from and how the splits are made.
"""

from adacsc.training.slices import (  # noqa: F401
    IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, SPLITS, SliceRecord, load_split, load_split_with_records,
    split_records,
)
from adacsc.training.lowfield import (  # noqa: F401
    LowFieldBatch, LowFieldConfig, TEST_BLOCK_FRACTION, TEST_NOISE_LEVELS, fixed_lowfield, random_lowfield,
    simulate,
)

__all__ = [
    "SPLITS", "IN_DISTRIBUTION", "OUT_OF_DISTRIBUTION", "SliceRecord", "load_split",
    "load_split_with_records", "split_records",
    "LowFieldBatch", "LowFieldConfig", "TEST_BLOCK_FRACTION", "TEST_NOISE_LEVELS", "simulate",
    "random_lowfield", "fixed_lowfield",
]
