"""Two sets of NET_Theta weights side by side on the 256 grid, in one process: the candidate
against the shipped default, each with its own low-pass part, on the trained K = 32 dictionary and
the unseen K = 128 one, and BART TV at given lambdas; plus CPU time per slice. The candidate may
also be a dictionary (--candidate-dictionary, a name or an .npz file) used with the same weights.

The data and degradation are those of `adacsc evaluate` on its 256 grid (0.72 mm pixels, 128 x 128
acquired, `fixed_lowfield` with the test seed 1 on test splits, seed 101 on the validation split),
so the figures for the default weights reproduce the evaluation's when the slices are the same.
Weights are names (adacsc.resources) or files. Times are process CPU seconds per slice at 256 x 256
(one thread unless --threads), best of --repeats runs taken in turn for the two weights.

Usage:  python benchmarks/bench_weights.py CANDIDATE [--baseline netv3_lowfield_tv] [--candidate-dictionary D]
            [--split test_mni152|test|val] [--images 12] [--bart 0.05=0.02263,0.15=0.07611,0.3=0.181]
            [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from adacsc import metrics
from adacsc.core.app import TrainedSettings
from adacsc.core.dictionary import Dictionary
from adacsc.evaluation.methods import BartPics, MapCSC
from adacsc.io.dictionary_file import load_dictionary, load_named_dictionary
from adacsc.io.weights_file import load_model, load_named_model
from adacsc.resources import DEFAULT_DICTIONARY
from adacsc.training.lowfield import fixed_lowfield
from adacsc.training.sampling import pick_evenly
from adacsc.training.slices import HELD_OUT_SUBJECT, load_split

log = logging.getLogger("bench_weights")

LEVELS = (0.05, 0.15, 0.3)


def _weights(name: str):
    return load_model(name) if Path(name).suffix == ".safetensors" else load_named_model(name)


def _dictionary(name: str) -> Dictionary:
    return load_dictionary(name) if Path(name).suffix == ".npz" else load_named_dictionary(name)


def _bart(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    return {f"{float(k):g}": float(v) for k, v in (part.split("=") for part in text.split(","))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", help="weights name or .safetensors file")
    parser.add_argument("--baseline", default="netv3_lowfield_tv")
    parser.add_argument("--dictionary", default=DEFAULT_DICTIONARY)
    parser.add_argument("--unseen-dictionary", default="cdl_k128_11x11_l0.01")
    parser.add_argument("--no-unseen", action="store_true", help="leave the unseen K = 128 rows out")
    parser.add_argument("--candidate-dictionary", default=None,
                        help="the candidate's dictionary in place of --dictionary (name or .npz file)")
    parser.add_argument("--split", default=HELD_OUT_SUBJECT)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--bart", default=None, metavar="LEVEL=LAMBDA,...",
                        help="BART pics TV at these lambdas (e.g. those of docs/evaluation/results.json)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    seed = 101 if args.split == "val" else 1
    trained, unseen = _dictionary(args.dictionary), _dictionary(args.unseen_dictionary)
    methods: dict[str, MapCSC] = {}
    own = {"baseline": trained,
           "candidate": _dictionary(args.candidate_dictionary) if args.candidate_dictionary else trained}
    for tag, name in (("baseline", args.baseline), ("candidate", args.candidate)):
        network, info = _weights(name)
        settings = TrainedSettings.from_scalars(info.scalars)
        methods[tag] = MapCSC(own[tag], settings, network=network)
        methods[f"{tag} K=128"] = MapCSC(unseen, settings, network=network)
    bart_lambdas = _bart(args.bart)
    bart = BartPics("tv", 100, lambdas=bart_lambdas) if bart_lambdas else None
    images = load_split(args.split, 256, pixel_mm=0.72)
    images = images[pick_evenly(images.shape[0], args.images)]
    log.info("baseline %s, candidate %s, %s (K=32) and %s, %d slices of %s, seed %d", args.baseline,
             args.candidate, args.dictionary, args.unseen_dictionary, images.shape[0], args.split, seed)
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for level in LEVELS:
        key = f"{level:g}"
        scores: dict[str, dict[str, list[float]]] = {}
        for start in range(0, images.shape[0], 4):
            batch = fixed_lowfield(images[start:start + 4], level, seed=seed, start_index=start)
            outputs = {}
            for tag in ("baseline", "candidate"):
                outputs[tag], _, outputs[f"{tag} low-pass part"] = methods[tag].solve(batch)
                if not args.no_unseen:
                    outputs[f"{tag} K=128"] = methods[f"{tag} K=128"](batch, level)
            if bart is not None:
                outputs["BART TV"] = bart(batch, level)
            for method, out in outputs.items():
                entry = scores.setdefault(method, {"psnr": [], "ssim_mask": []})
                for a, b in zip(out.abs().double().numpy(), batch.target.abs().double().numpy()):
                    entry["psnr"].append(metrics.psnr(a, b))
                    entry["ssim_mask"].append(metrics.masked_ssim(a, b))
        results[key] = scores
        log.info("noise %s: %s", key, ", ".join(f"{m} {np.mean(v['psnr']):.2f} dB ({np.mean(v['ssim_mask']):.3f})"
                                                for m, v in scores.items()))
    batch = fixed_lowfield(images[:1], 0.15, seed=seed)
    times: dict[str, list[float]] = {"baseline": [], "candidate": []}
    for _ in range(args.repeats):
        for tag in times:
            t0 = time.process_time()
            methods[tag].solve(batch)
            times[tag].append(time.process_time() - t0)
    best = {tag: min(v) for tag, v in times.items()}
    log.info("CPU s per slice (256 x 256, K=32, %d thread(s), best of %d): baseline %.3f, candidate %.3f, "
             "ratio %.3f", args.threads, args.repeats, best["baseline"], best["candidate"],
             best["candidate"] / best["baseline"])
    log.info("| method | " + " | ".join(f"noise {k}" for k in results) + " |")
    log.info("| --- |" + " --- |" * len(results))
    for method in results[next(iter(results))]:
        log.info("| %s | %s |", method, " | ".join(f"{np.mean(results[k][method]['psnr']):.2f} "
                                                    f"({np.mean(results[k][method]['ssim_mask']):.3f})" for k in results))
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "results": results,
                                         "cpu_seconds": times}, indent=1))


if __name__ == "__main__":
    main()
