"""The data-consistency trust index (adacsc.core.trust) on simulations with ground truth: its
spread in distribution, how often it and the code atypicality flag out-of-distribution cases,
and what they cost.

    python benchmarks/bench_trust.py                  held-out test slices and the OOD cases
    python benchmarks/bench_trust.py --calibrate      fit chi2_0 = 1 - a rho^b (printed; the shipped
                                                      one is kept) and the code atypicality's
                                                      expectation, smoothing direction and spread
                                                      (adacsc.core.trust.Typical) on validation slices

Cases (the evaluation protocol's degradation: central half of k-space acquired, 2x grid, complex
Gaussian noise at a noise-to-signal level; the chain is told the true noise std unless said):
- in distribution: Colin27 test slices (160 and 256 grids), levels 0.05, 0.15, 0.3; and (the
  false-flag count's wider cases) level 0.45, the 128 grid at 1.875 mm, 4 and 8 coils after coil
  combination, objects as smooth as the simulator renders them, and `adacsc simulate` scans
  through the default chain;
- noise level 2x off: the same slices, the chain told sigma / 2 or 2 sigma;
- other anatomy: the INIA19 macaque and the analytic phantom slices (160 grid);
- corrupted lines: 3 random phase-encode lines each with an RF spike (one sample at 0.5 x the
  largest |y|) of the in-distribution slices.
A slice is flagged "do not trust" when its trust index is outside [1 / limit, limit] or its
code atypicality is above its limit (the chain's defaults: adacsc.gadgets.csc).
Timing: the reconstruction of a slice (with both figures) against their own part
(adacsc.core.trust.measure), same slices, one torch thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import ismrmrd
import numpy as np
import torch

from adacsc.chain.config import load_chain
from adacsc.core.fourier import SampledFourier, fft2c, ifft2c
from adacsc.core.trust import (
    ATYPICALITY_LIMIT, CALIBRATION, SMOOTHING_TERMS, Typical, code_figures, expected_residual, measure,
)
from adacsc.gadgets.coil_combination import combine_buffer
from adacsc.gadgets.csc import DEFAULT_TRUST_LIMIT, ReconSettings, Settings, build_recon, distrust_reasons
from adacsc.io.dataset import read_images
from adacsc.mr.fft import fftc
from adacsc.replay import replay
from adacsc.simulation.coils import coil_sensitivities
from adacsc.simulation.scanner import SimulationConfig, simulate_scan
from adacsc.training.lowfield import TEST_BLOCK_FRACTION, acquired_shape_for, fixed_lowfield
from adacsc.training.slices import load_split

log = logging.getLogger("bench_trust")
LIMITS = (1.15, 1.2, 1.25, 1.3, 1.5)
ATYPICALITY_LIMITS = (2.5, ATYPICALITY_LIMIT, 3.5, 4.0)


def pick(split: str, size: int, count: int, pixel_mm: float | None = None) -> torch.Tensor:
    images = load_split(split, size, pixel_mm=pixel_mm)
    return images[np.linspace(0, images.shape[0] - 1, min(count, images.shape[0])).astype(int)]


def corrupt(y: np.ndarray, rng: np.random.Generator, lines: int = 3) -> np.ndarray:
    """Spikes: one sample of each of `lines` random lines set to 0.5 x the largest |y|."""
    y = y.copy()
    peak = np.abs(y).max()
    for line in rng.choice(y.shape[0], lines, replace=False):
        y[line, rng.integers(y.shape[1])] += 0.5 * peak * np.exp(1j * rng.uniform(0, 2 * np.pi))
    return y


def run_case(recon, name: str, images: torch.Tensor, level: float, *, told: float = 1.0, spikes: bool = False,
             seed: int = 11, smooth: bool = False) -> list[dict]:
    """Reconstruct every image at `level` (`smooth`: as the simulator renders them); the chain is told
    `told` x the true noise std."""
    batch = fixed_lowfield(smoothed(images) if smooth else images, level, seed=seed)
    rng = np.random.default_rng(seed)
    blocks = []
    for i in range(images.shape[0]):
        y = (batch.kspace[i] / batch.noise_std[i]).numpy().astype(np.complex64)
        blocks.append(corrupt(y, rng) if spikes else y)
    return run_blocks(recon, name, level, blocks, told=told, smooth=smooth)


def smoothed(images: torch.Tensor) -> torch.Tensor:
    """The images as `adacsc simulate` renders its objects at the acquired resolution (half the
    grid): a Gaussian of 0.42 acquired pixels and linear interpolation (adacsc.simulation.brain),
    i.e. k-space weighted by exp(-2 pi^2 0.42^2 f^2) sinc^2(f) per axis, f in cycles per acquired
    sample; like a scanner's raw-data filter, it takes 83 % of the amplitude at the block's edge."""
    shape = acquired_shape_for(tuple(images.shape[-2:]), TEST_BLOCK_FRACTION)
    weights = []
    for n, m in zip(images.shape[-2:], shape):
        f = (torch.arange(n, dtype=torch.float64) - n // 2) / m
        weights.append(torch.exp(-2 * np.pi ** 2 * 0.42 ** 2 * f ** 2) * torch.sinc(f) ** 2)
    return ifft2c(fft2c(images) * (weights[0][:, None] * weights[1][None, :]).to(torch.complex64))


def run_blocks(recon, name: str, level: float, blocks: list[np.ndarray], *, told: float = 1.0,
               coils: int = 1, smooth: bool = False) -> list[dict]:
    """Reconstruct every fully sampled k-space block (in units of the noise std) and note its figures."""
    rows = []
    for i, y in enumerate(blocks):
        lines = np.ones(y.shape[0], bool)
        started = time.perf_counter()
        out = recon(y, lines, told)
        total = time.perf_counter() - started
        figures = code_figures(float(np.sum(np.abs(y) ** 2)), y.size, told, out.active_per_sample, out.usage_entropy)
        rows.append({"case": name, "level": level, "image": i, "coils": coils, "smoothed": smooth,
                     "grid": list(recon.grid(y.shape)),
                     "chi2": out.data_residual, "rho": out.active_per_sample, "trust": out.trust_index,
                     "figures": figures, "atypicality": out.atypicality, "flagged": bool(distrust_reasons(out)),
                     "seconds": total})
        log.info("%-26s level %.2f image %d: chi2 %.3f rho %.3f trust %.3f atypicality %.2f (%.2f s)", name, level,
                 i, out.data_residual, out.active_per_sample, out.trust_index, out.atypicality, total)
    return rows


def coil_blocks(images: torch.Tensor, level: float, coils: int, seed: int = 11) -> list[np.ndarray]:
    """The images as the CSC gets them from a `coils`-channel scan: each coil image (the simulator's
    coil maps, adacsc.simulation.coils) acquired in the central half of k-space with unit complex
    noise per coil, combined with maps estimated from the noisy data as the chain does
    (adacsc.gadgets.coil_combination), in units of the combined noise std. `level` is the noise-to-
    signal RMS ratio of the ideally combined data (the image times the root sum of squares of the
    maps), the single-coil cases' level."""
    shape = acquired_shape_for(tuple(images.shape[-2:]), TEST_BLOCK_FRACTION)
    fourier = SampledFourier(shape, tuple(images.shape[-2:]))
    rng = np.random.default_rng([seed, coils, int(round(level * 1e6))])
    blocks = []
    for x in images:
        maps = torch.from_numpy(coil_sensitivities(x.shape[-1], coils, np.array([rng.uniform(-40.0, 40.0)]),
                                                   rng=rng)[0])
        clean = fourier(maps * x)
        ideal = fourier(torch.sqrt(torch.sum(maps.abs() ** 2, dim=0)) * x)
        sigma = level * float(torch.sqrt(torch.mean(ideal.abs() ** 2)))
        noise = (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape)) / np.sqrt(2)
        kspace = (clean.numpy() / sigma + noise).astype(np.complex64)
        image, gain = combine_buffer(kspace, np.ones(shape[0], bool), "inati", 7)
        blocks.append((fftc(image) / gain).astype(np.complex64))
    return blocks


def run_coils(recon, name: str, images: torch.Tensor, level: float, coils: int, smooth: bool = False) -> list[dict]:
    blocks = coil_blocks(smoothed(images) if smooth else images, level, coils)
    return run_blocks(recon, name, level, blocks, coils=coils, smooth=smooth)


def time_measure(recon, images: torch.Tensor, repeats: int = 5) -> tuple[float, float]:
    """(median seconds of a slice's reconstruction, median seconds of its trust-index part)."""
    batch = fixed_lowfield(images, 0.15, seed=3)
    whole, part = [], []
    for i in range(images.shape[0]):
        y = (batch.kspace[i] / batch.noise_std[i]).to(torch.complex64)[None]
        grid = recon.grid(tuple(y.shape[-2:]))
        started = time.perf_counter()
        recon(y[0].numpy(), np.ones(y.shape[1], bool), 1.0)
        whole.append(time.perf_counter() - started)
        result = recon.solve(y, grid, 1.0)
        fourier = SampledFourier(tuple(y.shape[-2:]), grid)
        for _ in range(repeats):
            started = time.perf_counter()
            measure(fourier, result.image, y, result.codes, y[0].numel(), 1.0)
            part.append(time.perf_counter() - started)
    return float(np.median(whole)), float(np.median(part))


SIMULATED = "in distribution: adacsc simulate"


def wider_in_distribution(recon, count: int) -> list[dict]:
    """In-distribution cases beyond the evaluation protocol's (test slices; they count as false
    flags): the noisiest training level 0.45, the simulator's 128 grid (its matrix 64, 1.875 mm
    pixels), 4 and 8 coils after coil combination, objects as smooth as the simulator renders them,
    and the simulator's own scans through the default chain."""
    test160 = pick("test", 160, count)
    rows = run_case(recon, "in distribution 160, noise 0.45", test160, 0.45)
    rows += run_case(recon, "in distribution 256, noise 0.45", pick("test", 256, max(count // 2, 1)), 0.45)
    test128 = pick("test", 128, count, 1.875)
    for level in (0.05, 0.3, 0.45):
        rows += run_case(recon, "in distribution 128 at 1.875 mm", test128, level)
    for coils in (4, 8):
        for level in (0.05, 0.3, 0.45):
            rows += run_coils(recon, f"in distribution 160, {coils} coils", test160, level, coils)
    for level in (0.05, 0.3, 0.45):
        rows += run_case(recon, "in distribution 128, smoothed", test128, level, smooth=True)
        rows += run_coils(recon, "in distribution 128, smoothed, 8 coils", test128, level, 8, smooth=True)
    return rows + simulated_scans()


def simulated_scans() -> list[dict]:
    """`adacsc simulate` brains (matrix 64 and 128; 1, 4 and 8 coils; noise 0.02, the default, and
    0.06; two slices) through `adacsc recon` with the default chain: the figures of its image meta."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for matrix in (64, 128):
            for coils in (1, 4, 8):
                for noise in (0.02, 0.06):
                    scan = simulate_scan(Path(folder) / f"scan_{matrix}_{coils}_{noise}.h5", SimulationConfig(
                        matrix=matrix, coils=coils, slices=2, seed=3, noise=noise, object="brain"))
                    out = Path(folder) / "out.h5"
                    replay(scan.path, out, load_chain("adacsc_lowfield"))
                    for i, image in enumerate(read_images(out)["image_1"]):
                        meta = ismrmrd.Meta.deserialize(image.attribute_string)
                        rows.append({"case": SIMULATED, "level": noise, "image": i, "coils": coils, "matrix": matrix,
                                     "trust": float(meta["TrustIndex"]),
                                     "atypicality": float(meta["CodeAtypicality"]),
                                     "flagged": meta["Trust"] != "ok"})
                        log.info("simulated scan: matrix %d, %d coils, noise %.2f, slice %d: trust %.3f atypicality "
                                 "%.2f", matrix, coils, noise, i, rows[-1]["trust"], rows[-1]["atypicality"])
                    out.unlink()
    return rows


HELD_OUT = "held out: "


def held_out_anatomy(recon, count: int) -> list[dict]:
    """Other anatomy outside the main cases: 256-grid macaque and phantom slices, and the 160-grid
    macaque slices half-way between the main case's."""
    macaque = load_split("ood_macaque", 160)
    picked = np.linspace(0, macaque.shape[0] - 1, min(count, macaque.shape[0])).astype(int)
    between = np.unique((picked[:-1] + picked[1:]) // 2)
    rows = []
    for level in (0.05, 0.15):
        rows += run_case(recon, HELD_OUT + "macaque 256", pick("ood_macaque", 256, max(count // 2, 1)), level)
        rows += run_case(recon, HELD_OUT + "phantom 256", pick("ood_phantom", 256, max(count // 2, 1)), level)
        rows += run_case(recon, HELD_OUT + "macaque 160 other slices", macaque[between], level)
    return rows


def summarise(rows: list[dict]) -> dict:
    out = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        t = np.array([r["trust"] for r in rows if r["case"] == case])
        a = np.array([r["atypicality"] for r in rows if r["case"] == case])
        out[case] = {"n": int(t.size), "mean": float(t.mean()), "min": float(t.min()), "max": float(t.max()),
                     "within_0.1": float(np.mean(np.abs(t - 1) <= 0.1)),
                     "flagged": {f"{lim:g}": float(np.mean((t > lim) | (t < 1 / lim))) for lim in LIMITS},
                     "atypicality_min": float(a.min()), "atypicality_median": float(np.median(a)),
                     "atypicality_max": float(a.max()),
                     "flagged_combined": float(np.mean([r["flagged"] for r in rows if r["case"] == case]))}
    return out


def combined(rows: list[dict], trust_limit: float, atypicality_limit: float) -> float:
    """The share of `rows` flagged by the trust index at `trust_limit` or the atypicality at its limit."""
    return float(np.mean([(r["trust"] > trust_limit) | (r["trust"] < 1 / trust_limit)
                          | (r["atypicality"] > atypicality_limit) for r in rows]))


def validation_rows(recon, count: int) -> list[dict]:
    """The calibration's validation slices: the 160 and 256 grids (220 mm field of view) at noise
    levels over the training range 0.02-0.45, the simulator's grids (128 and 512 at 240 mm: its
    matrices 64 and 256 on the 2x grid) and 4 and 8 coils after coil combination."""
    rows = []
    for size, n, levels in ((160, count, (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45)),
                            (256, count // 2, (0.03, 0.05, 0.1, 0.15, 0.3, 0.45))):
        images = pick("val", size, n)
        for level in levels:
            rows += run_case(recon, f"val {size}", images, level)
    for size, pixel_mm, n, levels in ((128, 1.875, count // 2, (0.02, 0.1, 0.2, 0.3, 0.45)),
                                      (512, 0.46875, max(count // 4, 1), (0.02, 0.1, 0.3, 0.45))):
        images = pick("val", size, n, pixel_mm)
        for level in levels:
            rows += run_case(recon, f"val {size} at {pixel_mm:g} mm", images, level)
    for size, n, coils, levels in ((160, count // 2, 4, (0.05, 0.15, 0.3, 0.45)),
                                   (160, count // 2, 8, (0.05, 0.15, 0.3, 0.45)),
                                   (256, max(count // 4, 1), 8, (0.05, 0.3))):
        images = pick("val", size, n)
        for level in levels:
            rows += run_coils(recon, f"val {size}, {coils} coils", images, level, coils)
    for size, pixel_mm, n in ((160, None, count), (128, 1.875, count // 2)):
        images = pick("val", size, n, pixel_mm)
        for level in (0.02, 0.05, 0.15, 0.3, 0.45):
            rows += run_case(recon, f"val {size} smoothed", images, level, smooth=True)
        rows += run_coils(recon, f"val {size} smoothed, 8 coils", images[: max(n // 2, 1)], 0.45, 8, smooth=True)
    return rows


def covariates(rows: list[dict], typical: Typical | None = None) -> tuple[np.ndarray, np.ndarray]:
    """([1, s, s^2, g] per row, (ln rho, H) per row), s and g held inside `typical`'s ranges."""
    figures = np.array([r["figures"] for r in rows])
    s = figures[:, 0]
    g = np.log(np.sqrt(np.prod(np.array([r["grid"] for r in rows], float), axis=1)) / 256)
    if typical is not None:
        s, g = np.clip(s, *typical.snr_range), np.clip(g, *typical.grid_range)
    return np.stack([np.ones_like(s), s, s * s, g], axis=1), figures[:, 1:]


def fit_typical(rows: list[dict]) -> Typical:
    """The expected (ln rho, H) of the sharp validation slices against (1, s, s^2, g) by least
    squares, the Gaussian of their residuals, the mean residual of the smoothed slices against
    (1, s) (the smoothing direction), and how far along it an object may be: the smallest multiple
    (from 1, in steps of 0.05) that leaves at most 1 % of all these slices above the limit."""
    sharp = [r for r in rows if not r["smoothed"]]
    terms, figures = covariates(sharp)
    coefficients, *_ = np.linalg.lstsq(terms, figures, rcond=None)
    residual = figures - terms @ coefficients
    precision = np.linalg.inv(np.cov(residual.T))
    ranges = (float(terms[:, 1].min()), float(terms[:, 1].max())), (float(terms[:, 3].min()), float(terms[:, 3].max()))
    smooth = [r for r in rows if r["smoothed"]]
    terms_smooth, figures_smooth = covariates(smooth)
    shift, *_ = np.linalg.lstsq(terms_smooth[:, :SMOOTHING_TERMS],
                                figures_smooth - terms_smooth @ coefficients, rcond=None)
    def rounded(matrix: np.ndarray) -> tuple:
        return tuple(tuple(float(f"{v:.6g}") for v in row) for row in matrix)
    typical = Typical(coefficients=rounded(coefficients), smoothing=rounded(shift), precision=rounded(precision),
                      snr_range=tuple(float(f"{v:.4f}") for v in ranges[0]),
                      grid_range=tuple(float(f"{v:.4f}") for v in ranges[1]))
    for smoothest in np.arange(1.0, 2.001, 0.05):
        typical = dataclasses.replace(typical, smoothest=round(float(smoothest), 2))
        if np.mean(atypicality(rows, typical) > ATYPICALITY_LIMIT) <= 0.01:
            break
    return typical


def atypicality(rows: list[dict], typical: Typical) -> np.ndarray:
    return np.array([typical.distance(tuple(r["figures"]), float(np.sqrt(np.prod(r["grid"])))) for r in rows])


def calibrate(recon, count: int, save: Path | None = None, load: Path | None = None) -> None:
    rows = json.loads(load.read_text())["rows"] if load else validation_rows(recon, count)
    if save:
        save.write_text(json.dumps({"rows": rows}, indent=1))
    sharp = [r for r in rows if not r["smoothed"]]
    chi = np.array([r["chi2"] for r in sharp])
    rho = np.array([r["rho"] for r in sharp])
    design = np.stack([np.ones_like(rho), np.log(rho)], 1)
    coef, *_ = np.linalg.lstsq(design, np.log(np.clip(1 - chi, 1e-6, None)), rcond=None)
    a, b = float(np.exp(coef[0])), float(coef[1])
    trust = chi / (1 - a * rho ** b)
    shipped = np.array([r["chi2"] / expected_residual(r["rho"]) for r in sharp])
    print(f"chi2_0 = 1 - {a:.4f} rho^{b:.4f} from {len(sharp)} validation slices; trust on them: mean "
          f"{trust.mean():.3f}, std {trust.std():.3f} (shipped {CALIBRATION}: mean {shipped.mean():.3f}, "
          f"std {shipped.std():.3f})")
    typical = fit_typical(rows)
    print(f"TYPICAL = {typical}")
    for name, subset in (("sharp", sharp), ("smoothed", [r for r in rows if r["smoothed"]]), ("all", rows)):
        distance = atypicality(subset, typical)
        print(f"  atypicality of the {len(subset)} {name} validation slices: median {np.median(distance):.2f}, 99th "
              f"percentile {np.quantile(distance, 0.99):.2f}, max {distance.max():.2f}; above {ATYPICALITY_LIMIT}: "
              f"{np.mean(distance > ATYPICALITY_LIMIT):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="slices per case on the 160 grid [8]")
    parser.add_argument("--calibrate", action="store_true", help="fit the calibration on validation slices")
    parser.add_argument("--json", type=Path, help="write every row and the summary here")
    parser.add_argument("--rows", type=Path, help="with --calibrate: fit to the rows a former --calibrate --json wrote")
    parser.add_argument("--held-out-anatomy", action="store_true",
                        help="also other anatomy the code figures were not chosen on: the macaque and phantom "
                             "slices of the 256 grid and the 160-grid macaque slices between those of the main cases")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    recon = build_recon(ReconSettings.of(Settings()))
    if args.calibrate:
        calibrate(recon, args.images, args.json, args.rows)
        return
    test160, test256 = pick("test", 160, args.images), pick("test", 256, max(args.images // 2, 1))
    rows = []
    for level in (0.05, 0.15, 0.3):
        rows += run_case(recon, "in distribution 160", test160, level)
        rows += run_case(recon, "in distribution 256", test256, level)
    rows += wider_in_distribution(recon, args.images)
    for level in (0.05, 0.15):
        rows += run_case(recon, "noise told 2x too low", test160, level, told=0.5)
        rows += run_case(recon, "noise told 2x too high", test160, level, told=2.0)
        rows += run_case(recon, "macaque", pick("ood_macaque", 160, args.images), level)
        rows += run_case(recon, "phantom", pick("ood_phantom", 160, args.images), level)
        rows += run_case(recon, "corrupted lines", test160, level, spikes=True)
    if args.held_out_anatomy:
        rows += held_out_anatomy(recon, args.images)
    whole, part = time_measure(recon, test160[:4])
    summary = summarise(rows)
    ood = [r for r in rows if not r["case"].startswith(("in distribution", HELD_OUT))]
    held_out = [r for r in rows if r["case"].startswith(HELD_OUT)]
    ind = [r for r in rows if r["case"].startswith("in distribution")]
    print(f"{'case':28s} {'n':>3s} {'mean':>6s} {'min':>6s} {'max':>6s} {'|t-1|<=0.1':>10s}  flagged at limit "
          + " ".join(f"{lim:>5g}" for lim in LIMITS) + "   atypicality min/median/max  flagged (both, defaults)")
    for case, s in summary.items():
        print(f"{case:28s} {s['n']:3d} {s['mean']:6.3f} {s['min']:6.3f} {s['max']:6.3f} {s['within_0.1']:10.0%}  "
              + " " * 16 + " ".join(f"{s['flagged'][f'{lim:g}']:5.0%}" for lim in LIMITS)
              + f"   {s['atypicality_min']:6.2f} {s['atypicality_median']:6.2f} {s['atypicality_max']:6.2f}"
              + f"  {s['flagged_combined']:5.0%}")
    for lim in LIMITS:
        false = np.mean([(r["trust"] > lim) | (r["trust"] < 1 / lim) for r in ind])
        caught = np.mean([(r["trust"] > lim) | (r["trust"] < 1 / lim) for r in ood])
        print(f"trust index alone, limit {lim:g}: in-distribution flagged {false:.1%}, out-of-distribution flagged "
              f"{caught:.1%}")
    for lim in ATYPICALITY_LIMITS:
        print(f"trust limit {DEFAULT_TRUST_LIMIT:g} or atypicality above {lim:g}: in-distribution flagged "
              f"{combined(ind, DEFAULT_TRUST_LIMIT, lim):.1%}, out-of-distribution flagged "
              f"{combined(ood, DEFAULT_TRUST_LIMIT, lim):.1%}")
    if held_out:
        print(f"held-out anatomy: {np.mean([r['flagged'] for r in held_out]):.1%} of {len(held_out)} flagged "
              "at the defaults")
    print(f"time per 160-grid slice {whole * 1000:.0f} ms, of which the trust index and atypicality "
          f"{part * 1000:.2f} ms ({100 * part / whole:.2f} %)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary, "seconds_slice": whole,
                                         "seconds_trust": part}, indent=1))


if __name__ == "__main__":
    main()
