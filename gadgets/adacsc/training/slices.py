"""Training, validation, test and out-of-distribution image sets: 2-D complex slices with provenance.

In-distribution (human): slices of the Colin27 T1 templates (ch2better, brain only; ch2, whole head)
in three orientations. Along each orientation's slicing axis the brain extent of ch2better is cut
into slices `SPACING_MM` apart (`THICKNESS_MM` thick), grouped into contiguous slabs of
`SLAB_SLICES` slices. One slab per orientation is the validation slab and one the test slab (at
`VAL_AT` and `TEST_AT` of the slab range); the rest are training slabs. Wherever two neighbouring
slabs belong to different splits, the slice on each side of the boundary is dropped (a gap), so
slices of different splits are at least 3 spacings apart and never share voxels. Both volumes use
the same world-coordinate slabs (both are in MNI space), so an anatomical slab is in one split
only, whichever volume it is cut from. Slices whose brain area (ch2better, in the nearest voxel
plane) covers less than `MIN_BRAIN_FRACTION` of the field of view are skipped.

Held-out subject, never used for training, tuning or dictionary learning in any form:
  test_mni152: the MNI ICBM152 2009a T1 template (an average of 152 other adults; Colin27 is one
  person), three orientations, slices `HELD_OUT_SPACING_MM` apart: human anatomy the networks
  never saw, where the Colin27 test slabs are unseen slices of the training subject. Not in
  `SPLITS` (it needs the PyPI package nilearn's data); `load_split` accepts it.

Out of distribution, never used for training or dictionary learning in any form:
  ood_macaque: the INIA19 rhesus macaque T1 brain (another species), three orientations;
  ood_phantom: the analytic 3-D modified Shepp-Logan phantom (adacsc.simulation.phantom).

Every image is normalised by the 99.5th percentile of |x| over its object pixels (those above 10%
of the slice maximum), so the bright tissue is about 1 (the maximum may exceed 1 slightly), and
gets a smooth random phase (`adacsc.simulation.phase.smooth_phase`: low-order polynomial, spatial
span drawn per image in `PHASE_SPAN_RAD`, random offset), seeded by (seed, image id): an image is
the same whichever subset is loaded with it.

`load_split(name, size)` -> complex64 tensor [N, size, size]; `split_records(name, size)` -> the
provenance of every image (`SliceRecord`). Results are cached as .npz under the user cache
directory (`cache_dir()`: $ADACSC_CACHE_DIR, else $XDG_CACHE_HOME/adacsc, else ~/.cache/adacsc),
never in the repository; pass cache=False to skip the cache.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from adacsc.simulation.phase import smooth_phase
from adacsc.simulation.phantom import phantom_slices
from adacsc.training.volumes import (
    ORIENTATIONS, SOURCES, TEST_ONLY_SOURCES, brain_box_mm, file_sha256, plane_fraction, resample_slices, source_path,
)

__all__ = [
    "SPLITS",
    "IN_DISTRIBUTION",
    "OUT_OF_DISTRIBUTION",
    "SliceRecord",
    "slab_layout",
    "catalogue",
    "split_records",
    "load_split",
    "load_split_with_records",
    "training_size",
    "cache_dir",
    "DATA_VERSION",
    "HELD_OUT_SUBJECT",
]

log = logging.getLogger(__name__)

#: Bump when anything changes the images (invalidates caches).
DATA_VERSION = 1

IN_DISTRIBUTION = ("train", "val", "test")
OUT_OF_DISTRIBUTION = ("ood_macaque", "ood_phantom")
SPLITS = IN_DISTRIBUTION + OUT_OF_DISTRIBUTION
HELD_OUT_SUBJECT = "test_mni152"

HUMAN_VOLUMES = ("colin27_ch2better", "colin27_ch2")
REFERENCE_VOLUME = "colin27_ch2better"  # defines slab positions, brain fraction and image centre
HUMAN_FOV_MM = 220.0
SPACING_MM = 2.0
THICKNESS_MM = 2.0
SLAB_SLICES = 8
VAL_AT = 0.30
TEST_AT = 0.55
MIN_BRAIN_FRACTION = 0.10

HELD_OUT_VOLUME = "mni152_2009a"
HELD_OUT_SPACING_MM = 8.0  # one slice per slab width, so the slices are far apart

MACAQUE_VOLUME = "inia19_macaque"
MACAQUE_FOV_MM = 96.0  # the macaque brain fills about as much of the field as the human one
MACAQUE_SPACING_MM = 4.0
MACAQUE_THICKNESS_MM = 1.0

PHANTOM_FOV_MM = 240.0
PHANTOM_POSITIONS_MM = tuple(float(p) for p in np.arange(-40.0, 24.1, 4.0))

PHASE_SPAN_RAD = (math.pi / 4, math.pi)
NORMALISATION_PERCENTILE = 99.5
DEFAULT_SIZE = 160

_AXIS_NAMES = "xyz"


@dataclass(frozen=True)
class SliceRecord:
    """Where one image comes from."""

    id: str  # e.g. "colin27_ch2/axial/z+012.5"
    split: str
    source: str  # key of adacsc.training.volumes.SOURCES, or "phantom"
    file: str  # file the pixels come from ("" for the analytic phantom)
    orientation: str
    position_mm: float  # world coordinate along the slicing axis
    slab: int  # slab index along the slicing axis (-1 when not slab-split)
    slab_range_mm: tuple[float, float]  # world extent of the slab (of the slice itself if no slab)
    thickness_mm: float
    fov_mm: float
    size: int
    brain_fraction: float  # object area / field of view area
    phase_seed: int
    phase_span_rad: float
    scale: float  # the magnitude was divided by this (99.5th percentile of the object pixels)


def cache_dir() -> Path:
    """The user cache directory of adacsc (created on first write, never inside the repository)."""
    env = os.environ.get("ADACSC_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "adacsc"


def _slice_id(source: str, orientation: str, position: float) -> str:
    axis = _AXIS_NAMES[ORIENTATIONS[orientation][0]]
    return f"{source}/{orientation}/{axis}{position:+06.1f}"


def _phase_seed(seed: int, image_id: str) -> int:
    return int(np.random.SeedSequence([int(seed), zlib.crc32(image_id.encode())]).generate_state(1)[0])


def _positions(lo: float, hi: float, spacing: float) -> np.ndarray:
    n = int(math.floor((hi - lo) / spacing)) + 1
    return lo + spacing * (np.arange(n) + 0.5) - 0.5 * (n * spacing - (hi - lo))


def slab_layout(orientation: str) -> dict:
    """The slab split of one orientation: positions (mm), slab index and split of every position
    ('train', 'val', 'test', 'gap') and the slab ranges. Deterministic (depends only on the
    reference volume)."""
    axis = ORIENTATIONS[orientation][0]
    lo, hi = brain_box_mm(REFERENCE_VOLUME)[axis]
    pos = _positions(lo, hi, SPACING_MM)
    n_slabs = int(math.ceil(pos.size / SLAB_SLICES))
    slab_split = ["train"] * n_slabs
    slab_split[int(round(VAL_AT * (n_slabs - 1)))] = "val"
    slab_split[int(round(TEST_AT * (n_slabs - 1)))] = "test"
    slab = np.arange(pos.size) // SLAB_SLICES
    split = []
    for j, s in enumerate(slab):
        first = j % SLAB_SLICES == 0 and s > 0 and slab_split[s - 1] != slab_split[s]
        last = (j % SLAB_SLICES == SLAB_SLICES - 1 and s + 1 < n_slabs
                and slab_split[s + 1] != slab_split[s])
        split.append("gap" if first or last else slab_split[s])
    ranges = []
    for s in range(n_slabs):
        p = pos[slab == s]
        ranges.append((float(p[0] - SPACING_MM / 2), float(p[-1] + SPACING_MM / 2)))
    return {"orientation": orientation, "axis": _AXIS_NAMES[axis], "positions_mm": pos,
            "slab": slab, "split": split, "slab_split": slab_split, "slab_ranges_mm": ranges}


def _human_fov(size: int, pixel_mm: float | None) -> float:
    """Field of view of the human slices: HUMAN_FOV_MM, or size x pixel_mm when a pixel size is asked."""
    if pixel_mm is None:
        return HUMAN_FOV_MM
    if not (isinstance(pixel_mm, (int, float)) and math.isfinite(pixel_mm) and pixel_mm > 0):
        raise ValueError(f"pixel_mm must be a positive number, got {pixel_mm!r}")
    return round(size * float(pixel_mm), 4)


def _human_records(size: int, seed: int, pixel_mm: float | None = None) -> list[SliceRecord]:
    records = []
    fov = _human_fov(size, pixel_mm)
    for orientation in ORIENTATIONS:
        layout = slab_layout(orientation)
        pos = layout["positions_mm"]
        frac = plane_fraction(REFERENCE_VOLUME, orientation, pos, fov)
        for source in HUMAN_VOLUMES:
            for j, p in enumerate(pos):
                split = layout["split"][j]
                if split == "gap" or frac[j] < MIN_BRAIN_FRACTION:
                    continue
                s = int(layout["slab"][j])
                records.append(_record(source, SOURCES[source].file, orientation, float(p), split, s,
                                       layout["slab_ranges_mm"][s], THICKNESS_MM, fov, size,
                                       float(frac[j]), seed))
    return records


def _record(source, file, orientation, position, split, slab, slab_range, thickness, fov, size,
            fraction, seed) -> SliceRecord:
    image_id = _slice_id(source, orientation, position)
    phase_seed = _phase_seed(seed, image_id)
    span = float(np.random.default_rng(phase_seed).uniform(*PHASE_SPAN_RAD))
    return SliceRecord(image_id, split, source, file, orientation, round(position, 4), slab,
                       (round(slab_range[0], 4), round(slab_range[1], 4)), thickness, fov, size,
                       round(fraction, 4), phase_seed, span, float("nan"))


def _macaque_records(size: int, seed: int) -> list[SliceRecord]:
    return _volume_records(MACAQUE_VOLUME, SOURCES[MACAQUE_VOLUME].file, "ood_macaque", MACAQUE_SPACING_MM,
                           MACAQUE_THICKNESS_MM, MACAQUE_FOV_MM, size, seed)


def _held_out_records(size: int, seed: int, pixel_mm: float | None = None) -> list[SliceRecord]:
    """The held-out subject: slices every HELD_OUT_SPACING_MM through its brain, three orientations."""
    return _volume_records(HELD_OUT_VOLUME, TEST_ONLY_SOURCES[HELD_OUT_VOLUME].file, HELD_OUT_SUBJECT,
                           HELD_OUT_SPACING_MM, THICKNESS_MM, _human_fov(size, pixel_mm), size, seed)


def _volume_records(volume: str, file: str, split: str, spacing_mm: float, thickness_mm: float, fov_mm: float,
                    size: int, seed: int) -> list[SliceRecord]:
    """Slices every `spacing_mm` through a whole volume's brain in three orientations (one split,
    no slabs), those with too little brain in the field of view left out."""
    box = brain_box_mm(volume)
    records = []
    for orientation in ORIENTATIONS:
        axis = ORIENTATIONS[orientation][0]
        pos = _positions(*box[axis], spacing_mm)
        frac = plane_fraction(volume, orientation, pos, fov_mm)
        for p, f in zip(pos, frac):
            if f < MIN_BRAIN_FRACTION:
                continue
            p = float(p)
            records.append(_record(volume, file, orientation, p, split, -1,
                                   (p - thickness_mm / 2, p + thickness_mm / 2), thickness_mm, fov_mm, size,
                                   float(f), seed))
    return records


def _phantom_records(size: int, seed: int) -> list[SliceRecord]:
    return [_record("phantom", "", "axial", p, "ood_phantom", -1, (p, p), 0.0, PHANTOM_FOV_MM, size,
                    float("nan"), seed) for p in PHANTOM_POSITIONS_MM]


def catalogue(size: int = DEFAULT_SIZE, seed: int = 0) -> list[SliceRecord]:
    """Records of every image of every split (without pixels; `scale` is NaN until loaded)."""
    _check_size(size)
    return _human_records(size, seed) + _macaque_records(size, seed) + _phantom_records(size, seed)


def _check_size(size: int) -> None:
    if int(size) != size or size < 16:
        raise ValueError(f"image size must be an integer >= 16, got {size!r}")


def _check_split(name: str) -> None:
    if name not in SPLITS + (HELD_OUT_SUBJECT,):
        raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS + (HELD_OUT_SUBJECT,))}")


def training_size(pixel_mm: float) -> int:
    """The even slice size that covers the human field of view HUMAN_FOV_MM at `pixel_mm`."""
    if not pixel_mm > 0:
        raise ValueError(f"pixel_mm must be > 0, got {pixel_mm!r}")
    return 2 * int(round(HUMAN_FOV_MM / pixel_mm / 2))


def _records_of(name: str, size: int, seed: int, pixel_mm: float | None = None) -> list[SliceRecord]:
    _check_split(name)
    _check_size(size)
    if name in IN_DISTRIBUTION:
        return [r for r in _human_records(size, seed, pixel_mm) if r.split == name]
    if name == HELD_OUT_SUBJECT:
        return _held_out_records(size, seed, pixel_mm)
    if pixel_mm is not None:
        raise ValueError(f"pixel_mm applies to the human splits {IN_DISTRIBUTION + (HELD_OUT_SUBJECT,)} only, "
                         f"not {name!r}")
    if name == "ood_macaque":
        return _macaque_records(size, seed)
    return _phantom_records(size, seed)


def _normalise(mag: np.ndarray) -> tuple[np.ndarray, float]:
    peak = float(mag.max())
    if peak <= 0:
        return mag, 1.0
    obj = mag[mag > 0.1 * peak]
    scale = float(np.percentile(obj, NORMALISATION_PERCENTILE))
    return mag / scale, scale


def _render(records: list[SliceRecord]) -> tuple[np.ndarray, list[SliceRecord]]:
    if not records:
        return np.zeros((0, 0, 0), np.complex64), []
    size = records[0].size
    mags = np.zeros((len(records), size, size), np.float32)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.source, r.orientation), []).append(i)
    for (source, orientation), idx in groups.items():
        if source == "phantom":
            for i in idx:
                rec = records[i]
                img = phantom_slices(size, [rec.position_mm], fov_mm=rec.fov_mm,
                                     rng=np.random.default_rng(rec.phase_seed))
                mags[i] = np.abs(img[0])
            continue
        first = records[idx[0]]
        centre_key = REFERENCE_VOLUME if source in HUMAN_VOLUMES else source
        centre = tuple(0.5 * (a + b) for a, b in brain_box_mm(centre_key))
        mags[idx] = resample_slices(source, orientation, np.array([records[i].position_mm for i in idx]),
                                    size, fov_mm=first.fov_mm, centre_mm=centre,
                                    thickness_mm=first.thickness_mm)
    out = np.zeros(mags.shape, np.complex64)
    done = []
    for i, rec in enumerate(records):
        mag, scale = _normalise(mags[i])
        rng = np.random.default_rng(rec.phase_seed)
        rng.uniform(*PHASE_SPAN_RAD)  # the span, drawn in the record
        phi = smooth_phase(size, 0.0, rng, max_variation_rad=rec.phase_span_rad)[0]
        out[i] = (mag * np.exp(1j * phi)).astype(np.complex64)
        done.append(SliceRecord(**{**asdict(rec), "scale": scale}))
    return out, done


def _cache_key(name: str, size: int, seed: int, pixel_mm: float | None = None) -> str:
    files = {}
    keys = (HUMAN_VOLUMES if name in IN_DISTRIBUTION else (MACAQUE_VOLUME,) if name == "ood_macaque"
            else (HELD_OUT_VOLUME,) if name == HELD_OUT_SUBJECT else ())
    for key in keys:
        path = str(source_path(key))
        files[key] = {"path": path, "sha256": file_sha256(path)}
    key = {"version": DATA_VERSION, "name": name, "size": size, "seed": seed, "files": files}
    if pixel_mm is not None:
        key["pixel_mm"] = float(pixel_mm)
    blob = json.dumps(key, sort_keys=True)
    return f"{name}_{size}_s{seed}_{zlib.crc32(blob.encode()):08x}"


def load_split_with_records(name: str, size: int = DEFAULT_SIZE, *, seed: int = 0, cache: bool = True,
                            pixel_mm: float | None = None) -> tuple[torch.Tensor, list[SliceRecord]]:
    """Images complex64 [N, size, size] of split `name` and their provenance records. `pixel_mm`
    (human splits only) sets the pixel size, i.e. the field of view size x pixel_mm; by default the
    field of view is HUMAN_FOV_MM whatever the size."""
    records = _records_of(name, size, seed, pixel_mm)
    path = (cache_dir() / "training_slices" / (_cache_key(name, size, seed, pixel_mm) + ".npz")
            if cache else None)
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                images = data["images"]
                meta = json.loads(str(data["records_json"]))
            loaded = [SliceRecord(**{**m, "slab_range_mm": tuple(m["slab_range_mm"])}) for m in meta]
            if [r.id for r in loaded] == [r.id for r in records]:
                log.debug("split %s (%d images) from cache %s", name, len(loaded), path)
                return torch.from_numpy(images), loaded
            log.info("cache %s is stale; rebuilding", path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cache file %s: %s", path, exc)
    log.info("building split %s: %d images of %dx%d", name, len(records), size, size)
    images, records = _render(records)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        with open(tmp, "wb") as fh:
            np.savez(fh, images=images, records_json=np.array(json.dumps([asdict(r) for r in records])))
        os.replace(tmp, path)
    return torch.from_numpy(images), records


def load_split(name: str, size: int = DEFAULT_SIZE, *, seed: int = 0, cache: bool = True,
               pixel_mm: float | None = None) -> torch.Tensor:
    """Images of split `name` ('train', 'val', 'test', 'ood_macaque', 'ood_phantom', 'test_mni152'):
    complex64 tensor [N, size, size], deterministic for given (size, seed, pixel_mm)."""
    return load_split_with_records(name, size, seed=seed, cache=cache, pixel_mm=pixel_mm)[0]


def split_records(name: str, size: int = DEFAULT_SIZE, *, seed: int = 0) -> list[SliceRecord]:
    """Provenance of the images of split `name`, in the order of `load_split` (scale left NaN)."""
    return _records_of(name, size, seed)


def describe(size: int = DEFAULT_SIZE, seed: int = 0) -> str:
    """A markdown summary of the splits (slabs, counts, sources), as in docs/DATA.md."""
    lines = ["| orientation | slicing axis | positions (mm) | slabs | validation slab (mm) | test slab (mm) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for orientation in ORIENTATIONS:
        lay = slab_layout(orientation)
        pos = lay["positions_mm"]
        val = [r for r, s in zip(lay["slab_ranges_mm"], lay["slab_split"]) if s == "val"]
        test = [r for r, s in zip(lay["slab_ranges_mm"], lay["slab_split"]) if s == "test"]
        lines.append(f"| {orientation} | {lay['axis']} | {pos[0]:+.1f} .. {pos[-1]:+.1f} every {SPACING_MM:g} "
                     f"({pos.size}) | {len(lay['slab_split'])} x {SLAB_SLICES} slices | "
                     f"{lay['slab_split'].index('val')}: {val[0][0]:+.1f} .. {val[0][1]:+.1f} | "
                     f"{lay['slab_split'].index('test')}: {test[0][0]:+.1f} .. {test[0][1]:+.1f} |")
    lines += ["", "| split | images | by source and orientation |", "| --- | --- | --- |"]
    for name in SPLITS:
        recs = _records_of(name, size, seed)
        counts: dict[str, int] = {}
        for r in recs:
            key = f"{r.source}/{r.orientation}"
            counts[key] = counts.get(key, 0) + 1
        lines.append(f"| {name} | {len(recs)} | " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " |")
    return "\n".join(lines)
