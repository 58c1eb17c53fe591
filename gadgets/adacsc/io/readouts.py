"""What each readout of a raw stream is for, where it goes in k-space, and the per-scan account.

Classification follows Gadgetron's buffering gadgets (AcquisitionAccumulateTrigger,
BucketToBuffer): noise, navigator, phase-correction, dummy-scan, RT and HP feedback and
surface-coil-correction readouts never enter an image; parallel-calibration readouts are
calibration only (they may feed the coil maps), ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING readouts
serve both; everything else is imaging.

Placement (`Grid.place`) puts a readout on the encoded grid [RO, E1, E2]:
- ACQ_IS_REVERSE readouts are flipped, so sample order is k-space order (center_sample then counts
  in that order);
- a readout shorter than the encoded readout (asymmetric echo) is placed with its center_sample on
  the encoded readout's centre; a full-length readout is taken as it is;
- E1 and E2 indices are shifted so the encoding limits' centres land on the matrix centres
  (partial Fourier, Gadgetron's BucketToBuffer rule);
and refuses, with the reason, a readout of another encoding space, an index beyond the encoding
limits or a readout that cannot fit.

`Tally` is the scan's account: per class, how many readouts were used for the image, used for
calibration, or left out and why.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import ismrmrd
import numpy as np

from adacsc.io.header import Encoding

log = logging.getLogger(__name__)

NOISE = "noise"
NAVIGATION = "navigator"
PHASE_CORRECTION = "phase correction"
DUMMY_SCAN = "dummy scan"
RT_FEEDBACK = "RT feedback"
HP_FEEDBACK = "HP feedback"
SURFACE_COIL_CORRECTION = "surface coil correction"
CALIBRATION = "calibration-only"
CALIBRATION_AND_IMAGING = "calibration and imaging"
IMAGING = "imaging"

_NOT_IMAGED = (
    (ismrmrd.ACQ_IS_NOISE_MEASUREMENT, NOISE, "noise readouts are for prewhitening, and no noise adjustment ran in front"),
    (ismrmrd.ACQ_IS_NAVIGATION_DATA, NAVIGATION, "navigators are not image data; this chain does no motion correction"),
    (ismrmrd.ACQ_IS_PHASECORR_DATA, PHASE_CORRECTION,
     "phase-correction readouts are not image data; this chain does no EPI phase correction"),
    (ismrmrd.ACQ_IS_DUMMYSCAN_DATA, DUMMY_SCAN, "dummy scans are not image data"),
    (ismrmrd.ACQ_IS_RTFEEDBACK_DATA, RT_FEEDBACK, "RT feedback readouts are not image data"),
    (ismrmrd.ACQ_IS_HPFEEDBACK_DATA, HP_FEEDBACK, "HP feedback readouts are not image data"),
    (ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA, SURFACE_COIL_CORRECTION,
     "surface-coil correction scans are not image data"),
)

USED_FOR_IMAGE = "used for the image"
USED_FOR_CALIBRATION = "used for calibration"


def classify(acquisition: ismrmrd.Acquisition) -> tuple[str, str | None]:
    """(class, reason it is left out or None) of one readout."""
    for flag, kind, reason in _NOT_IMAGED:
        if acquisition.is_flag_set(flag):
            return kind, reason
    if acquisition.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING):
        return CALIBRATION_AND_IMAGING, None
    if acquisition.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION):
        return CALIBRATION, None
    return IMAGING, None


class Unplaceable(ValueError):
    """A readout that cannot be put on the encoded grid; the message says why."""


@dataclass(frozen=True)
class Placement:
    """A readout on the grid: samples [CHA, RO] in k-space order and its E1, E2 positions."""

    samples: np.ndarray
    e1: int
    e2: int


@dataclass(frozen=True)
class Grid:
    """The encoded k-space grid of encoding space 0 and how indices map onto it."""

    readout: int
    lines: int
    partitions: int
    e1_limits: tuple[int, int, int]
    e2_limits: tuple[int, int, int]

    @classmethod
    def from_encoding(cls, encoding: Encoding) -> Grid:
        x, y, z = encoding.encoded_matrix
        return cls(x, y, z, encoding.e1_limits, encoding.e2_limits)

    @property
    def e1_offset(self) -> int:
        """Added to kspace_encode_step_1 so the limits' centre lands on the matrix centre."""
        return self.lines // 2 - self.e1_limits[1]

    @property
    def e2_offset(self) -> int:
        """Added to kspace_encode_step_2 so the limits' centre lands on the matrix centre."""
        return self.partitions // 2 - self.e2_limits[1] if self.partitions > 1 else 0

    def readout_length(self, samples: int) -> int:
        """The buffer's readout length for readouts of `samples` samples: the encoded readout, or
        the readout itself when the header understates it."""
        return max(self.readout, samples)

    def place(self, acquisition: ismrmrd.Acquisition, readout: int) -> Placement:
        """The readout on a grid of `readout` samples, or Unplaceable naming why not (the caller
        checks that a buffer's readouts share one length)."""
        if acquisition.encoding_space_ref != 0:
            raise Unplaceable(f"encoding space {acquisition.encoding_space_ref}: only encoding space 0 is "
                              "reconstructed")
        e1 = self._position("kspace_encode_step_1", acquisition.idx.kspace_encode_step_1, self.e1_limits,
                            self.e1_offset, self.lines)
        e2 = self._position("kspace_encode_step_2", acquisition.idx.kspace_encode_step_2, self.e2_limits,
                            self.e2_offset, self.partitions)
        data = acquisition.data
        if acquisition.is_flag_set(ismrmrd.ACQ_IS_REVERSE):
            data = data[:, ::-1]
        samples = data.shape[1]
        if samples == readout:
            return Placement(np.ascontiguousarray(data), e1, e2)
        if samples > readout:
            raise Unplaceable(f"readout length {samples} differs from the scan's {readout}")
        start = readout // 2 - acquisition.center_sample
        if start < 0 or start + samples > readout:
            raise Unplaceable(f"readout of {samples} samples with center_sample {acquisition.center_sample} "
                              f"does not fit the encoded readout of {readout} samples centred at {readout // 2}")
        placed = np.zeros((data.shape[0], readout), np.complex64)
        placed[:, start:start + samples] = data
        return Placement(placed, e1, e2)

    @staticmethod
    def _position(name: str, index: int, limits: tuple[int, int, int], offset: int, size: int) -> int:
        low, _, high = limits
        if size > 1 and high > low and not low <= index <= high:
            raise Unplaceable(f"{name} {index} beyond the encoding limits {low}..{high}")
        position = index + offset
        if not 0 <= position < size:
            raise Unplaceable(f"{name} {index} falls outside the encoded matrix of {size} "
                              f"(limits centre {limits[1]})")
        return position


@dataclass
class Tally:
    """What happened to every readout of a scan, by class: used for the image, used for
    calibration, or left out with the reason."""

    outcomes: Counter = field(default_factory=Counter)
    """(class, outcome) -> readouts; outcome is USED_FOR_IMAGE, USED_FOR_CALIBRATION or a reason"""

    def use(self, kind: str, outcome: str = USED_FOR_IMAGE) -> None:
        self.outcomes[(kind, outcome)] += 1

    def leave_out(self, kind: str, reason: str, scan_counter: int) -> None:
        """Count a readout left out; the first of each reason is logged as a warning."""
        if not self.outcomes[(kind, reason)]:
            log.warning("%s readout %d left out: %s", kind, scan_counter, reason)
        self.outcomes[(kind, reason)] += 1

    def count(self, outcome: str | None = None, kind: str | None = None) -> int:
        """Readouts with this outcome and/or class (None: any)."""
        return sum(n for (k, o), n in self.outcomes.items()
                   if (outcome is None or o == outcome) and (kind is None or k == kind))

    @property
    def left_out(self) -> int:
        return self.count() - self.count(USED_FOR_IMAGE) - self.count(USED_FOR_CALIBRATION)

    def lines(self) -> list[str]:
        """One line per (class, outcome), e.g. '8 navigator: left out (navigators are ...)'."""
        found = []
        for (kind, outcome), n in sorted(self.outcomes.items()):
            used = outcome in (USED_FOR_IMAGE, USED_FOR_CALIBRATION)
            found.append(f"{n} {kind}: {outcome if used else f'left out ({outcome})'}")
        return found

    def report(self) -> None:
        """Log the account of every readout: a warning when any was left out."""
        (log.warning if self.left_out else log.info)(
            "readouts: %d used for the image, %d used for calibration, %d left out; %s",
            self.count(USED_FOR_IMAGE), self.count(USED_FOR_CALIBRATION), self.left_out,
            "; ".join(self.lines()) or "none received")
