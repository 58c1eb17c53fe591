"""Dictionary pools of a training run: the training pool one dictionary is drawn from per batch,
and the held-out validation pool (roles of docs/DATA.md, adacsc.training.family)."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from adacsc import resources
from adacsc.core.dictionary import Dictionary
from adacsc.core.filter_bank import FilterBank
from adacsc.io.dictionary_file import load_named_dictionary
from adacsc.training.family import EVALUATION_DICTIONARIES, TRAINING_DICTIONARIES, VALIDATION_DICTIONARIES

__all__ = ["DictionaryPool", "default_dictionary_pools", "check_pools", "FALLBACK_TRAIN_DICTIONARIES",
           "FALLBACK_VAL_DICTIONARIES"]

log = logging.getLogger(__name__)

#: Analytic dictionaries used when the learned ones are not installed.
FALLBACK_TRAIN_DICTIONARIES = ("dct7x7_k48", "gabor9x9_k32", "gabor11x11_k64")
FALLBACK_VAL_DICTIONARIES = ("dct9x9_k80",)


class DictionaryPool:
    """A list of dictionaries to draw from (the training pool) or iterate over (validation)."""

    def __init__(self, dictionaries: Sequence[Dictionary]) -> None:
        if not dictionaries:
            raise ValueError("a dictionary pool needs at least one dictionary")
        self.dictionaries = list(dictionaries)
        self.filters = [FilterBank(torch.from_numpy(np.ascontiguousarray(d.filters)).to(torch.float32))
                        for d in self.dictionaries]

    @classmethod
    def from_names(cls, names: Sequence[str]) -> "DictionaryPool":
        """The pool of the named dictionaries (adacsc.resources)."""
        return cls([load_named_dictionary(n) for n in names])

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dictionaries]

    def __len__(self) -> int:
        return len(self.dictionaries)

    def describe(self) -> list[dict[str, Any]]:
        """Name, size and source of every dictionary (for provenance)."""
        return [{"name": d.name, "num_filters": d.num_filters, "filter_shape": list(d.filter_shape),
                 "source": d.source} for d in self.dictionaries]

    def draw(self, rng: np.random.Generator, max_filters: int | None) -> tuple[str, FilterBank]:
        """A random dictionary of the pool, then a random subset (random order) of its filters."""
        j = int(rng.integers(len(self.filters)))
        f = self.filters[j].tensor
        k = f.shape[0]
        take = k if max_filters is None else min(k, max_filters)
        order = rng.permutation(k)[:take]
        return self.dictionaries[j].name, FilterBank(f[torch.from_numpy(order)].contiguous())


def default_dictionary_pools() -> tuple[list[str], list[str]]:
    """(training names, validation names): the learned dictionaries' roles of docs/DATA.md when
    they are all shipped, else the analytic dictionaries (with a warning)."""
    shipped = set(resources.names(resources.DICTIONARY))
    missing = sorted(set(TRAINING_DICTIONARIES + VALIDATION_DICTIONARIES) - shipped)
    if not missing:
        return list(TRAINING_DICTIONARIES), list(VALIDATION_DICTIONARIES)
    log.warning("learned dictionaries %s are not installed; training with the analytic dictionaries "
                "(train %s, validation %s)", ", ".join(missing), ", ".join(FALLBACK_TRAIN_DICTIONARIES),
                ", ".join(FALLBACK_VAL_DICTIONARIES))
    return list(FALLBACK_TRAIN_DICTIONARIES), list(FALLBACK_VAL_DICTIONARIES)


def check_pools(train_names: Sequence[str], val_names: Sequence[str]) -> None:
    """Refuse overlapping pools and evaluation-only dictionaries (ValueError)."""
    overlap = sorted(set(train_names) & set(val_names))
    if overlap:
        raise ValueError(f"dictionaries {overlap} are in both the training and the validation pool")
    banned = sorted(set(EVALUATION_DICTIONARIES) & (set(train_names) | set(val_names)))
    if banned:
        raise ValueError(f"dictionaries {banned} are reserved for evaluation (docs/DATA.md) and never used "
                         "in training or validation")
