"""What the coil combination tells the reconstruction about a slice, carried in the image meta:
which phase-encode lines were acquired, the noise level when a noise scan fixed it, how many
averages were combined and whether a 3-D scan's kz was undersampled inside its limits.

The meta's text form (`SamplingMask` one '0'/'1' per phase-encode line, `NoiseLevel`,
`NoiseSource`, `Averages` when more than 1, `KzUndersampled` when so) is written and read here
only; the gadgets pass `SliceSampling` objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SliceSampling", "NOISE_SCAN"]

NOISE_SCAN = "noise scan"
"""the noise source of a slice whose readouts were all prewhitened with a noise scan"""


def _first(value: Any) -> Any:
    """ismrmrd.Meta holds every value as a list; a plain dict may hold a string."""
    return value[0] if isinstance(value, list) and value else value


@dataclass(frozen=True)
class SliceSampling:
    """A slice's acquired lines (bool [E1]) and its k-space noise std when known (1 in SNR units
    after prewhitening), with where that level comes from."""

    lines: np.ndarray
    noise_level: float | None = None
    noise_source: str = ""
    averages: int = 1
    """the most averages combined into one line"""
    kz_undersampled: bool = False
    """a 3-D partition whose kz was undersampled inside the encoding limits"""

    @classmethod
    def prewhitened(cls, lines: np.ndarray, level: float = 1.0, **fields: Any) -> "SliceSampling":
        """A slice whose readouts were prewhitened with a noise scan: noise std 1, or `level`
        after averaging."""
        return cls(np.asarray(lines, bool), level, NOISE_SCAN, **fields)

    def qa(self) -> dict[str, str]:
        """The entries the reconstruction's QA meta repeats (none for a plain 2-D single average)."""
        meta = {"Averages": str(self.averages)} if self.averages > 1 else {}
        return meta | ({"KzUndersampled": "1"} if self.kz_undersampled else {})

    def to_meta(self) -> dict[str, str]:
        meta = {"SamplingMask": "".join("1" if x else "0" for x in self.lines)}
        if self.noise_level is not None:
            meta.update({"NoiseLevel": f"{self.noise_level:g}", "NoiseSource": self.noise_source})
        return meta | self.qa()

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], lines: int) -> "SliceSampling":
        """The sampling of a slice with `lines` phase-encode lines; without a mask in the meta,
        every line counts as acquired (an image from elsewhere)."""
        mask = _first(meta.get("SamplingMask"))
        if not mask:
            sampled = np.ones(lines, bool)
        elif len(mask) != lines or set(mask) - {"0", "1"}:
            raise ValueError(f"SamplingMask meta does not describe {lines} phase-encode lines")
        else:
            sampled = np.array([c == "1" for c in mask])
        extra = {"averages": int(_first(meta.get("Averages")) or 1),
                 "kz_undersampled": _first(meta.get("KzUndersampled")) == "1"}
        level = _first(meta.get("NoiseLevel"))
        if not level:
            return cls(sampled, **extra)
        return cls(sampled, float(level), str(_first(meta.get("NoiseSource", "meta"))), **extra)
