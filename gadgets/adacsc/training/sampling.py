"""The training data stream: which slices, crops and degradations step t sees.

Everything random in step t is drawn from generators seeded by (seed, t), so a run is a
deterministic function of (schedule, seed, data, dictionaries), whatever the interruptions:
a resumed run continues with exactly the stream an uninterrupted run would have used. Every
trainer (NET_Theta, the black-box U-Net) samples here, so they see the same data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from adacsc.training.lowfield import LowFieldBatch, augment, random_lowfield
from adacsc.training.schedules import Schedule

__all__ = ["sample_training_batch", "pick_evenly"]


def _step_generators(seed: int, step: int, salt: int = 0) -> tuple[np.random.Generator, torch.Generator]:
    ss = np.random.SeedSequence([int(seed), int(step), int(salt)])
    rng = np.random.default_rng(ss)
    gen = torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0] >> 1))
    return rng, gen


def sample_training_batch(images: torch.Tensor | Sequence[torch.Tensor], schedule: Schedule, seed: int,
                          step: int) -> tuple[LowFieldBatch, np.random.Generator]:
    """The degraded training batch of step `step` (random slices, crops, augmentation, random
    low-field degradation), a function of (seed, step) only, and the step's numpy generator for
    any further draws. Shared by every trainer, so baselines see exactly the same data stream.

    images: one set [N, H, W] or several (e.g. one per pixel size); a batch draws one set. With
    schedule.crop_min each side of the crop is drawn in [crop_min, crop] (even)."""
    rng, gen = _step_generators(seed, step)
    sets = [images] if isinstance(images, torch.Tensor) else list(images)
    chosen = sets[int(rng.integers(len(sets)))] if len(sets) > 1 else sets[0]
    n, height, width = chosen.shape
    crop_h = crop_w = schedule.crop
    if schedule.crop_min is not None:
        crop_h, crop_w = (2 * int(v) for v in rng.integers(schedule.crop_min // 2, schedule.crop // 2 + 1, 2))
    idx = rng.integers(0, n, schedule.batch_size)
    rows = rng.integers(0, height - crop_h + 1, schedule.batch_size)
    cols = rng.integers(0, width - crop_w + 1, schedule.batch_size)
    x = torch.stack([chosen[i, r:r + crop_h, c:c + crop_w] for i, r, c in zip(idx, rows, cols)])
    return random_lowfield(augment(x, gen), gen, schedule.lowfield), rng


def pick_evenly(n_total: int, n: int) -> list[int]:
    """`n` indices spread evenly over range(n_total) (all of them when n >= n_total): a fixed,
    representative subset of validation or test slices."""
    if n >= n_total:
        return list(range(n_total))
    return [int(round(i)) for i in np.linspace(0, n_total - 1, n)]
