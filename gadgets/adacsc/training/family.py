"""The learned dictionary family and its roles in the dictionary-randomised training (docs/DATA.md).

  training:   drawn at random, one per batch, by `adacsc train`
  validation: held out of training; used for model selection (unseen filters)
  evaluation: the unseen, larger K = 128 dictionary; never used in training or model selection
"""

from __future__ import annotations

from adacsc.core.dictionary import Dictionary
from adacsc.io.dictionary_file import load_named_dictionary

__all__ = ["TRAINING_DICTIONARIES", "VALIDATION_DICTIONARIES", "EVALUATION_DICTIONARIES", "ROLES",
           "dictionary_role", "load_family"]

TRAINING_DICTIONARIES = (
    "cdl_k16_7x7_l0.01", "cdl_k16_9x9_l0.01", "cdl_k16_11x11_l0.01",
    "cdl_k32_7x7_l0.01", "cdl_k32_9x9_l0.01", "cdl_k32_11x11_l0.01",
    "cdl_k64_7x7_l0.01", "cdl_k64_9x9_l0.01", "cdl_k64_11x11_l0.01",
    "cdl_k16_9x9_l0.03", "cdl_k32_11x11_l0.03", "cdl_k64_9x9_l0.03",
)
VALIDATION_DICTIONARIES = ("cdl_k32_9x9_l0.01_s1", "cdl_k64_11x11_l0.03")
EVALUATION_DICTIONARIES = ("cdl_k128_11x11_l0.01",)

ROLES = {"training": TRAINING_DICTIONARIES, "validation": VALIDATION_DICTIONARIES,
         "evaluation": EVALUATION_DICTIONARIES}


def dictionary_role(name: str) -> str | None:
    """'training', 'validation', 'evaluation' or None (not a learned family member)."""
    for role, names in ROLES.items():
        if name in names:
            return role
    return None


def load_family(role: str) -> list[Dictionary]:
    """The shipped dictionaries of one role, loaded by registry name."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return [load_named_dictionary(name) for name in ROLES[role]]
