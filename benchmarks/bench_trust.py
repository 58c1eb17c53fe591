"""The data-consistency trust index (adacsc.core.trust) on simulations with ground truth: its
spread in distribution, how often it flags out-of-distribution cases, and what it costs.

    python benchmarks/bench_trust.py                  held-out test slices and the OOD cases
    python benchmarks/bench_trust.py --calibrate      fit chi2_0 = 1 - a rho^b on validation slices

Cases (the evaluation protocol's degradation: central half of k-space acquired, 2x grid, complex
Gaussian noise at a noise-to-signal level; the chain is told the true noise std unless said):
- in distribution: Colin27 test slices (160 and 256 grids), levels 0.05, 0.15, 0.3;
- noise level 2x off: the same slices, the chain told sigma / 2 or 2 sigma;
- other anatomy: the INIA19 macaque and the analytic phantom slices (160 grid);
- corrupted lines: 3 random phase-encode lines each with an RF spike (one sample at 0.5 x the
  largest |y|) of the in-distribution slices.
Timing: the reconstruction of a slice (with the index) against the index's own part
(adacsc.core.trust.measure), same slices, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from adacsc.core.fourier import SampledFourier
from adacsc.core.trust import CALIBRATION, measure
from adacsc.gadgets.csc import ReconSettings, Settings, build_recon
from adacsc.training.lowfield import fixed_lowfield
from adacsc.training.slices import load_split

log = logging.getLogger("bench_trust")
LIMITS = (1.15, 1.2, 1.25, 1.3, 1.5)


def pick(split: str, size: int, count: int) -> torch.Tensor:
    images = load_split(split, size)
    return images[np.linspace(0, images.shape[0] - 1, min(count, images.shape[0])).astype(int)]


def corrupt(y: np.ndarray, rng: np.random.Generator, lines: int = 3) -> np.ndarray:
    """Spikes: one sample of each of `lines` random lines set to 0.5 x the largest |y|."""
    y = y.copy()
    peak = np.abs(y).max()
    for line in rng.choice(y.shape[0], lines, replace=False):
        y[line, rng.integers(y.shape[1])] += 0.5 * peak * np.exp(1j * rng.uniform(0, 2 * np.pi))
    return y


def run_case(recon, name: str, images: torch.Tensor, level: float, *, told: float = 1.0, spikes: bool = False,
             seed: int = 11) -> list[dict]:
    """Reconstruct every image at `level`; the chain is told `told` x the true noise std."""
    batch = fixed_lowfield(images, level, seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(images.shape[0]):
        y = (batch.kspace[i] / batch.noise_std[i]).numpy().astype(np.complex64)
        if spikes:
            y = corrupt(y, rng)
        lines = np.ones(y.shape[0], bool)
        started = time.perf_counter()
        out = recon(y, lines, told)
        total = time.perf_counter() - started
        rows.append({"case": name, "level": level, "image": i, "chi2": out.data_residual, "rho": out.active_per_sample,
                     "trust": out.trust_index, "seconds": total})
        log.info("%-26s level %.2f image %d: chi2 %.3f rho %.3f trust %.3f (%.2f s)", name, level, i,
                 out.data_residual, out.active_per_sample, out.trust_index, total)
    return rows


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


def summarise(rows: list[dict]) -> dict:
    out = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        t = np.array([r["trust"] for r in rows if r["case"] == case])
        out[case] = {"n": int(t.size), "mean": float(t.mean()), "min": float(t.min()), "max": float(t.max()),
                     "within_0.1": float(np.mean(np.abs(t - 1) <= 0.1)),
                     "flagged": {f"{lim:g}": float(np.mean((t > lim) | (t < 1 / lim))) for lim in LIMITS}}
    return out


def calibrate(recon, count: int) -> None:
    rows = []
    for size, n, levels in ((160, count, (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)), (256, count // 2, (0.03, 0.05, 0.1, 0.15, 0.3))):
        images = pick("val", size, n)
        for level in levels:
            rows += run_case(recon, f"val {size}", images, level)
    chi = np.array([r["chi2"] for r in rows])
    rho = np.array([r["rho"] for r in rows])
    design = np.stack([np.ones_like(rho), np.log(rho)], 1)
    coef, *_ = np.linalg.lstsq(design, np.log(np.clip(1 - chi, 1e-6, None)), rcond=None)
    a, b = float(np.exp(coef[0])), float(coef[1])
    trust = chi / (1 - a * rho ** b)
    print(f"chi2_0 = 1 - {a:.4f} rho^{b:.4f} from {len(rows)} validation slices; trust on them: mean "
          f"{trust.mean():.3f}, std {trust.std():.3f} (shipped: {CALIBRATION})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="slices per case on the 160 grid [8]")
    parser.add_argument("--calibrate", action="store_true", help="fit the calibration on validation slices")
    parser.add_argument("--json", type=Path, help="write every row and the summary here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    recon = build_recon(ReconSettings.of(Settings()))
    if args.calibrate:
        calibrate(recon, args.images)
        return
    test160, test256 = pick("test", 160, args.images), pick("test", 256, max(args.images // 2, 1))
    rows = []
    for level in (0.05, 0.15, 0.3):
        rows += run_case(recon, "in distribution 160", test160, level)
        rows += run_case(recon, "in distribution 256", test256, level)
    for level in (0.05, 0.15):
        rows += run_case(recon, "noise told 2x too low", test160, level, told=0.5)
        rows += run_case(recon, "noise told 2x too high", test160, level, told=2.0)
        rows += run_case(recon, "macaque", pick("ood_macaque", 160, args.images), level)
        rows += run_case(recon, "phantom", pick("ood_phantom", 160, args.images), level)
        rows += run_case(recon, "corrupted lines", test160, level, spikes=True)
    whole, part = time_measure(recon, test160[:4])
    summary = summarise(rows)
    ood = [r for r in rows if not r["case"].startswith("in distribution")]
    ind = [r for r in rows if r["case"].startswith("in distribution")]
    print(f"{'case':28s} {'n':>3s} {'mean':>6s} {'min':>6s} {'max':>6s} {'|t-1|<=0.1':>10s}  flagged at limit "
          + " ".join(f"{lim:>5g}" for lim in LIMITS))
    for case, s in summary.items():
        print(f"{case:28s} {s['n']:3d} {s['mean']:6.3f} {s['min']:6.3f} {s['max']:6.3f} {s['within_0.1']:10.0%}  "
              + " " * 16 + " ".join(f"{s['flagged'][f'{lim:g}']:5.0%}" for lim in LIMITS))
    for lim in LIMITS:
        false = np.mean([(r["trust"] > lim) | (r["trust"] < 1 / lim) for r in ind])
        caught = np.mean([(r["trust"] > lim) | (r["trust"] < 1 / lim) for r in ood])
        print(f"limit {lim:g}: in-distribution flagged {false:.1%}, out-of-distribution flagged {caught:.1%}")
    print(f"time per 160-grid slice {whole * 1000:.0f} ms, of which the trust index {part * 1000:.2f} ms "
          f"({100 * part / whole:.2f} %)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary, "seconds_slice": whole,
                                         "seconds_trust": part}, indent=1))


if __name__ == "__main__":
    main()
