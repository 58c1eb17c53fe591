"""Quality against time of the FISTA iteration count, for one set of NET_Theta weights.

The count is trained with (the unrolled iterations) and stored in the weights, so the gadget's
default follows it; this curve is the evidence for the choice. For each count: mean PSNR of the
learned-map reconstruction on validation slices of the 256 grid (0.72 mm pixels, 128 x 128
acquired, the grid of the real 0.055 T scans) at each test noise level, and the median time per
slice (network, low-pass and solver), all counts run in the same process. Validation slices only:
the test slices stay untouched.

Usage:  python benchmarks/bench_iterations.py [--weights NAME] [--iterations 8 16 24 32 48 64]
                                              [--images 6] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from adacsc.core.app import CSCRecon, TrainedSettings
from adacsc.core.lambdas import SparsityMaps
from adacsc.io.dictionary_file import load_named_dictionary
from adacsc.io.weights_file import load_named_model
from adacsc.resources import DEFAULT_DICTIONARY
from adacsc.runtime import configure_process
from adacsc.training.lowfield import fixed_lowfield
from adacsc.training.slices import load_split
from adacsc.metrics import magnitude_psnr
from adacsc.training.sampling import pick_evenly

log = logging.getLogger("bench_iterations")


def main() -> None:
    configure_process()  # the process settings the command line makes (adacsc.runtime)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="netv3_lowfield_tv")
    parser.add_argument("--dictionary", default=DEFAULT_DICTIONARY)
    parser.add_argument("--iterations", type=int, nargs="+", default=[8, 16, 24, 32, 48, 64])
    parser.add_argument("--noise-levels", type=float, nargs="+", default=[0.05, 0.15, 0.3])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    network, info = load_named_model(args.weights)
    trained = TrainedSettings.from_scalars(info.scalars)
    dictionary = load_named_dictionary(args.dictionary)
    images = load_split("val", 256, pixel_mm=0.72)
    images = images[pick_evenly(images.shape[0], args.images)]
    batches = {level: fixed_lowfield(images, level, seed=7) for level in args.noise_levels}
    log.info("weights %s (trained with %s iterations, %s low-pass), %s, %d validation slices, %d threads",
             args.weights, trained.iterations, trained.lowpass, args.dictionary, images.shape[0],
             torch.get_num_threads())
    log.info("| iterations | " + " | ".join(f"PSNR noise {lv:g}" for lv in args.noise_levels)
             + " | mean PSNR | s per slice |")
    log.info("| --- |" + " --- |" * (len(args.noise_levels) + 2))
    for count in args.iterations:
        recon = CSCRecon.from_trained(dictionary, SparsityMaps(network), trained.overridden(iterations=count),
                                      super_resolution=2, device=torch.device("cpu"))
        psnrs, seconds = [], []
        for batch in batches.values():
            scores = []
            for i in range(images.shape[0]):
                start = time.perf_counter()
                result = recon.solve(batch.kspace[i:i + 1], batch.grid_shape, batch.noise_std[i:i + 1])
                seconds.append(time.perf_counter() - start)
                scores.append(float(magnitude_psnr(result.image, batch.target[i:i + 1])))
            psnrs.append(float(np.mean(scores)))
        log.info(f"| {count} | " + " | ".join(f"{p:.2f}" for p in psnrs)
                 + f" | {np.mean(psnrs):.2f} | {statistics.median(seconds):.2f} |")


if __name__ == "__main__":
    main()
