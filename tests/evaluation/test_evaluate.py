"""`adacsc evaluate` (adacsc.evaluation) and the black-box U-Net reference (adacsc.training.blackbox):
an end-to-end run on the real test sets, the target checks, and the U-Net's training and file format."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from adacsc import cli, metrics
from adacsc import resources
from adacsc.evaluation.protocol import LOWPASS, MAPS, PERMUTED, TEST_SETS, TEST_SETS_256, UNSEEN
from adacsc.evaluation.report import render_markdown, targets
from adacsc.simulation.phantom import phantom_slices
from adacsc.training.blackbox import BlackBoxConfig, ImageUNet, load_blackbox, save_blackbox, train_blackbox
from adacsc.training.lowfield import fixed_lowfield
from adacsc.training.schedules import Schedule, get_schedule
from adacsc.training.slices import load_split
from adacsc.training.sampling import pick_evenly
from support.scans import needs_brain

HAVE_BART = shutil.which("bart") is not None


def _phantoms(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    positions = np.linspace(-30.0, 20.0, n)
    return torch.from_numpy(phantom_slices(size, positions, fov_mm=200.0, rng=np.random.default_rng(seed)))


@pytest.fixture(scope="module")
def tiny_blackbox(tmp_path_factory):
    schedule = get_schedule("tiny", steps=40, crop=32, validate_every=0, log_every=5)
    out = tmp_path_factory.mktemp("blackbox")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope runs before the per-test one-thread fixture
    try:
        return train_blackbox(schedule, out, train_images=_phantoms(6), val_images=_phantoms(2, seed=1),
                              config=BlackBoxConfig(base_channels=8, depth=2, lr=3e-3, batch_size=2),
                              progress=False)
    finally:
        torch.set_num_threads(threads)


def test_blackbox_training_reduces_the_loss_and_round_trips(tiny_blackbox, tmp_path):
    model, meta = load_blackbox(tiny_blackbox)
    losses = [h["loss"] for h in meta["provenance"]["history"] if "loss" in h]
    assert len(losses) == 8 and np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    x = fixed_lowfield(_phantoms(1, seed=5), 0.1).zero_filled()
    again = save_blackbox(model, tmp_path / "copy.safetensors", meta["provenance"])
    with torch.inference_mode():
        assert torch.equal(model(x), load_blackbox(again)[0](x))
        assert model(x).shape == x.shape and model(x).is_complex()


def test_blackbox_loader_refuses_other_files(tmp_path):
    with pytest.raises(ValueError, match="not a black-box U-Net"):
        load_blackbox(resources.package_data("data", "weights", "netv3_light.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read"):
        load_blackbox(bad)
    model = ImageUNet(BlackBoxConfig(base_channels=4, depth=1))
    path = save_blackbox(model, tmp_path / "small.safetensors", {})
    meta_path = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"unet.head.weight": torch.zeros(1)}, str(meta_path),
              metadata={"adacsc": json.dumps({"format": "adacsc-blackbox-unet", "config": {}, "provenance": {}})})
    with pytest.raises(ValueError, match="do not match"):
        load_blackbox(meta_path)
    assert load_blackbox(path)[1]["config"]["depth"] == 1


@needs_brain
def test_evaluate_end_to_end(tiny_blackbox, tmp_path, caplog):
    out = tmp_path / "eval"
    args = ["evaluate", "-o", str(out), "--images", "1", "--images-256", "1", "--val-images", "1",
            "--iterations", "5", "--scalar-grid", "0.04,0.16", "--bart-grid", "0.01", "--real-scan", "sim_brain_4coil_64.h5",
            "--blackbox", str(tiny_blackbox), "--threads", "1", "--grid-only"]
    if not HAVE_BART:
        args.append("--no-bart")
    with caplog.at_level(logging.INFO):
        assert cli.main(args) == 0
    assert (out / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "results.json").read_text())
    report = (out / "EVALUATION.md").read_text()
    expected = {"zero_filled", LOWPASS, "scalar", "scalar_one", "scalar_default", MAPS, PERMUTED, UNSEEN, "unet"}
    if HAVE_BART:
        expected |= {"bart_wavelet", "bart_wavelet_shifts", "bart_tv"}
    assert set(result["methods"]) == expected
    assert list(result["results"]) == list(TEST_SETS_256) + list(TEST_SETS)
    # the report is a function of results.json alone, which names no path of this machine (beyond the
    # command line as typed)
    assert render_markdown(result, "evaluation.png") == report
    assert str(tmp_path) not in json.dumps({k: v for k, v in result.items() if k != "provenance"})
    assert result["settings"]["blackbox"] == tiny_blackbox.name
    assert result["provenance"]["command"].startswith("adacsc evaluate -o")
    assert "--grid-only" in report and "not this time" in report
    assert list(result["results"][next(iter(TEST_SETS_256))]) == ["0.05", "0.15", "0.3"]
    for label in list(TEST_SETS) + list(TEST_SETS_256):
        assert f"## {label}" in report
    for name in result["methods"].values():
        assert f"| {name} |" in report
    assert "## Targets" in report and "evaluation.png" in report and "adacsc evaluate -o" in report
    assert result["permutation_max_relative_difference"] < 1e-3
    # the zero-filled score is exactly what an independent computation gives
    label = next(iter(TEST_SETS))
    images = load_split(TEST_SETS[label])
    x = images[pick_evenly(images.shape[0], 1)]
    batch = fixed_lowfield(x, 0.15, seed=1)
    zf = batch.zero_filled()[0].abs().double().numpy()
    ref = batch.target[0].abs().double().numpy()
    scores = result["results"][label]["0.15"]
    assert scores["zero_filled"]["psnr"][0] == pytest.approx(metrics.psnr(zf, ref), abs=1e-6)
    assert scores["zero_filled"]["ssim"][0] == pytest.approx(metrics.ssim(zf, ref), abs=1e-6)
    assert scores[MAPS]["psnr"][0] > scores["zero_filled"]["psnr"][0] + 1.0
    assert scores[LOWPASS]["psnr"][0] > scores["zero_filled"]["psnr"][0]
    assert 0 < scores[MAPS]["ssim_mask"][0] <= 1
    if HAVE_BART:
        assert scores["bart_tv"]["psnr"][0] > scores["zero_filled"]["psnr"][0]
    # --report-only re-renders the document from results.json
    (out / "EVALUATION.md").write_text("stale")
    (out / "evaluation.png").unlink()
    assert cli.main(["evaluate", "-o", str(out), "--report-only", "--figure", "--real-scan", "sim_brain_4coil_64.h5"]) == 0
    assert (out / "EVALUATION.md").read_text().startswith("# Evaluation")
    assert (out / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_brain
def test_shipped_blackbox_resolves_by_name_and_loads():
    model, meta = load_blackbox(resources.resolve(resources.BASELINE, "unet_blackbox"))
    # read back as a Schedule: fields added since (with their defaults, e.g. lr_new) compare equal
    assert Schedule.from_dict(meta["provenance"]["schedule"]) == get_schedule("cpu-lowfield-tv")
    x = fixed_lowfield(load_split("val")[:1], 0.15, seed=3)
    with torch.inference_mode():
        out = model(x.zero_filled())
    zf = x.zero_filled()[0].abs().double().numpy()
    ref = x.target[0].abs().double().numpy()
    assert metrics.psnr(out[0].abs().double().numpy(), ref) > metrics.psnr(zf, ref) + 2.0


def test_evaluate_refuses_a_missing_or_path_like_blackbox(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert cli.main(["evaluate", "-o", str(tmp_path), "--blackbox", "no_such_model", "--no-bart"]) == 2
        assert cli.main(["evaluate", "-o", str(tmp_path), "--blackbox", "../../etc/x", "--no-bart"]) == 2
        assert cli.main(["evaluate", "-o", str(tmp_path), "--images", "0", "--no-blackbox"]) == 2
    text = caplog.text
    assert "no black-box weights named 'no_such_model'" in text and "--images must be at least 1" in text


def _fake_result(maps_gain: float, unseen: float, ood_drop_maps: float, ood_drop_unet: float,
                 bart_gap: float, permuted: float = 0.0, unet_gap_256: float = 0.0) -> dict:
    """A result dict with PSNRs built from the given differences (one image, one level)."""
    labels = list(TEST_SETS)

    def entry(psnr: float) -> dict:
        return {"psnr": [psnr], "ssim": [0.9], "ssim_mask": [0.8], "nrmse": [0.1]}

    def row(drop_m: float, drop_u: float, scalar_shift: float, tv_gap: float) -> dict:
        maps = 30.0 + 3.0 - drop_m
        return {"zero_filled": entry(30.0), LOWPASS: entry(33.0 - maps_gain - 0.1),
                "scalar": entry(33.0 - maps_gain + scalar_shift),
                "scalar_one": entry(32.0 - maps_gain), MAPS: entry(maps), PERMUTED: entry(maps + permuted),
                UNSEEN: entry(maps + unseen), "unet": entry(34.0 - drop_u), "bart_wavelet": entry(maps - bart_gap),
                "bart_wavelet_shifts": entry(maps - bart_gap - 1.0), "bart_tv": entry(maps - tv_gap)}

    results, grids = {}, {}
    for i, label in enumerate(labels):
        drop_m = 0.0 if i == 0 else ood_drop_maps
        results[label] = {"0.15": row(drop_m, 0.0 if i == 0 else ood_drop_unet, 0 if i == 0 else -drop_m,
                                      bart_gap + 0.5)}
        grids[label] = "160"
    for label in TEST_SETS_256:
        results[label] = {lv: row(0.0, 1.0 + unet_gap_256, 0.0, bart_gap) for lv in ("0.05", "0.15", "0.3")}
        grids[label] = "256"
    methods = {k: k for k in results[labels[0]]["0.15"]}
    return {"results": results, "methods": methods, "grids": grids, "permutation_max_relative_difference": 1e-6}


def test_targets_report_what_is_met_and_what_is_not():
    good = targets(_fake_result(maps_gain=1.2, unseen=-0.1, ood_drop_maps=0.2, ood_drop_unet=2.0, bart_gap=1.2,
                                unet_gap_256=0.1))
    assert good and all(row["met"] for row in good)
    bad = targets(_fake_result(maps_gain=0.4, unseen=-0.5, ood_drop_maps=2.0, ood_drop_unet=0.5, bart_gap=-0.2,
                               permuted=0.1, unet_gap_256=-0.5))
    assert not any(row["met"] for row in bad if "1.0 dB above" in row["target"])
    assert not any(row["met"] for row in bad if "no worse than the black-box" in row["target"])
    assert not any(row["met"] for row in bad if "permuted filters give the identical row" in row["target"])
    assert not any(row["met"] for row in bad if "unseen" in row["target"])
    assert not any(row["met"] for row in bad if "black-box" in row["target"])
    assert not any(row["met"] for row in bad if "BART" in row["target"])
    assert not any(row["met"] for row in bad if "tuned per noise level" in row["target"])
    assert not any(row["met"] for row in bad if "bart_tv" in row["target"])
    per_set = len(TEST_SETS_256)
    assert sum("0.5 dB" in row["target"] for row in bad) == 3 * per_set
    assert sum("above BART TV" in row["target"] for row in bad) == 2 * per_set
    assert sum("above its own low-pass" in row["target"] for row in bad) == 2 * per_set
