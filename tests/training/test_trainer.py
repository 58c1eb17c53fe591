"""`adacsc train` (adacsc.training.trainer): a tiny run learns, checkpoints resume exactly, the weights
it writes load and work with a dictionary of another size."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adacsc.core.convolution import Synthesis
from adacsc.core.dictionary import random_dictionary
from adacsc.core.filter_bank import FilterBank
from adacsc.io.weights_file import load_model
from adacsc.simulation.phantom import phantom_slices
from adacsc.training.schedules import SCHEDULES, Schedule, get_schedule
from adacsc.training.checkpoint import CheckpointError
from adacsc.training.family import EVALUATION_DICTIONARIES
from adacsc.training.pools import DictionaryPool, check_pools, default_dictionary_pools
from adacsc.training.trainer import Trainer


def _images(n: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    positions = np.linspace(-30.0, 20.0, n)
    return torch.from_numpy(phantom_slices(size, positions, fov_mm=200.0, rng=np.random.default_rng(seed)))


def _pools() -> tuple[DictionaryPool, DictionaryPool]:
    train = DictionaryPool([random_dictionary(8, 5, seed=1), random_dictionary(6, 7, seed=2)])
    val = DictionaryPool([random_dictionary(5, 5, seed=3)])
    return train, val


def _schedule(**overrides) -> Schedule:
    base = dict(steps=8, checkpoint_every=4, validate_every=4, val_images=2, final_validation=False)
    base.update(overrides)
    return get_schedule("tiny", **base)


def _trainer(out: Path, schedule: Schedule, **kwargs) -> Trainer:
    train, val = _pools()
    return Trainer(schedule, out, train_images=_images(6), val_images=_images(2, seed=1),
                   train_dictionaries=train, val_dictionaries=val, seed=kwargs.pop("seed", 3),
                   progress=False, **kwargs)


def test_schedules_are_consistent():
    assert {"tiny", "cpu-2h", "gpu"} <= set(SCHEDULES)
    for schedule in SCHEDULES.values():
        assert Schedule.from_dict(json.loads(json.dumps(schedule.to_dict()))) == schedule
    assert SCHEDULES["cpu-2h"].crop <= 128 and SCHEDULES["cpu-2h"].train_iterations <= 24
    with pytest.raises(ValueError, match="unknown schedule"):
        get_schedule("forever")


def test_default_pools_are_disjoint_and_never_use_the_evaluation_dictionary():
    train, val = default_dictionary_pools()
    assert train and val and not set(train) & set(val)
    assert not set(EVALUATION_DICTIONARIES) & (set(train) | set(val))
    check_pools(train, val)
    with pytest.raises(ValueError, match="both"):
        check_pools(["a", "b"], ["b"])
    with pytest.raises(ValueError, match="evaluation"):
        check_pools(["a", EVALUATION_DICTIONARIES[0]], ["b"])


def test_tiny_training_reduces_the_loss_on_a_fixed_batch(tmp_path):
    # nearly the whole k-space, little noise: the initial threshold (0.1) over-regularises and a
    # few steps must find that out
    schedule = _schedule(steps=16, validate_every=0, checkpoint_every=16, train_iterations=8,
                         block_fraction=(0.9, 1.0), noise_level=(0.05, 0.1))
    trainer = _trainer(tmp_path / "run", schedule)
    batch, _, filters = trainer.batch(10**6)  # outside the training stream, fixed
    with torch.no_grad():
        before = float(trainer.loss_on(batch, filters))
    beta0 = trainer.beta
    result = trainer.run()
    with torch.no_grad():
        after = float(trainer.loss_on(batch, filters))
    assert result is not None and result.steps == 16
    assert after < 0.8 * before, (before, after)
    assert trainer.beta != beta0
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) == 8 and all(np.isfinite(losses))


def test_checkpoint_and_resume_continue_the_same_run(tmp_path):
    schedule = _schedule()
    reference = _trainer(tmp_path / "straight", schedule)
    reference.run()

    first = _trainer(tmp_path / "resumed", schedule)
    assert first.run(stop_after=4) is None  # interrupted: checkpoint at step 4
    latest = json.loads((tmp_path / "resumed" / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 4

    with pytest.raises(CheckpointError, match="--resume"):
        _trainer(tmp_path / "resumed", schedule).run()
    with pytest.raises(CheckpointError, match="schedule"):
        _trainer(tmp_path / "resumed", _schedule(lr=0.5)).run(resume=True)

    second = _trainer(tmp_path / "resumed", schedule)
    result = second.run(resume=True)
    assert result is not None and second.step == 8 and second.resumed_from == [4]
    steps = [h["step"] for h in second.history if "loss" in h]
    assert steps == [2, 4, 6, 8]
    # same data stream, same optimiser state: the same parameters as the uninterrupted run
    for (name, a), (_, b) in zip(reference.network.state_dict().items(), second.network.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    assert second.beta == pytest.approx(reference.beta, rel=1e-5)
    ref_loss = [h["loss"] for h in reference.history if "loss" in h]
    res_loss = [h["loss"] for h in second.history if "loss" in h]
    assert np.allclose(ref_loss, res_loss, rtol=1e-4)
    kept = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step_000004", "step_000008"]


def test_saved_weights_load_and_work_with_another_dictionary(tmp_path):
    trainer = _trainer(tmp_path / "run", _schedule(steps=4, final_validation=True, final_val_images=2,
                                                   validate_every=0),
                       name="netv3_test", provenance={"created_by": "test"})
    result = trainer.run()
    assert result.weights == tmp_path / "run" / "netv3_test.safetensors"
    network, info = load_model(result.weights)
    assert info.kind == "v3"
    assert info.scalars["beta"] == pytest.approx(trainer.beta)
    prov = info.provenance
    assert prov["created_by"] == "test" and prov["steps"] == 4 and prov["schedule"]["name"] == "tiny"
    assert [d["name"] for d in prov["train_dictionaries"]] == trainer.train_pool.names
    assert set(prov["validation"]["mean"]) == {"0.05", "0.15", "all_levels"}
    summary = json.loads(result.summary.read_text())
    entry = summary["validation"]["per_dictionary"][trainer.val_pool.names[0]]["0.05"]
    assert {"zero_filled", "maps", "best_scalar", "best_scalar_lambda", "scalar"} <= set(entry)
    single = summary["validation"]["per_dictionary"][trainer.val_pool.names[0]]["all_levels"]
    assert single["best_scalar_lambda"] in SCHEDULES["tiny"].lambda_grid and "maps_minus_best_scalar" in single
    x0 = _images(2, size=48).to(torch.complex64)
    for k, size in ((3, 5), (11, 9)):  # trained with K <= 6
        synthesis = Synthesis(FilterBank(random_dictionary(k, size, seed=k).filters))
        with torch.no_grad():
            maps = network(x0, synthesis)
        assert maps.shape == (2, k, 48, 48)
        assert bool(torch.isfinite(maps).all()) and float(maps.min()) > 0
        assert float(maps.max()) < info.lambda_max


@pytest.fixture
def training_volumes(tmp_path, monkeypatch) -> None:
    """Skip without the Colin27 volumes (and nibabel); slice caches go under tmp_path."""
    pytest.importorskip("nibabel")
    from adacsc.training.volumes import source_path

    try:
        source_path("colin27_ch2")
        source_path("colin27_ch2better")
    except (FileNotFoundError, KeyError) as exc:
        pytest.skip(f"training volumes not installed: {exc}")
    monkeypatch.setenv("ADACSC_CACHE_DIR", str(tmp_path / "cache"))


def test_train_command_tiny(tmp_path, training_volumes):
    from adacsc import cli

    out = tmp_path / "out"
    argv = ["-o", str(out), "--schedule", "tiny", "--device", "cpu", "--no-progress", "--threads", "1",
            "--train-dictionaries", "dct7x7_k48,gabor9x9_k32", "--val-dictionaries", "gabor11x11_k64",
            "--stop-after", "4"]
    assert cli.main(["train"] + argv) == 0
    assert not (out / "netv3_light.safetensors").exists()
    assert cli.main(["train"] + argv[:-2] + ["--resume"]) == 0
    network, info = load_model(out / "netv3_light.safetensors")
    prov = info.provenance
    assert prov["steps"] == SCHEDULES["tiny"].steps and prov["resumed_from"] == [4]
    assert prov["created_by"].startswith("adacsc train -o")
    assert prov["data"]["train"]["images"] > 0 and prov["git"]["commit"] is None or len(prov["git"]["commit"]) == 40
    assert cli.main(["train"] + argv[:2] + ["--schedule", "tiny", "--train-dictionaries", "dct7x7_k48",
                                            "--val-dictionaries", "dct7x7_k48"]) == 2


def test_train_command_blackbox_tiny(tmp_path, training_volumes):
    """`adacsc train --model unet-blackbox` trains on the slice sets `train` loads (a list) and
    writes weights that `adacsc evaluate` can load."""
    from adacsc import cli
    from adacsc.training.blackbox import load_blackbox

    out = tmp_path / "out"
    argv = ["train", "-o", str(out), "--model", "unet-blackbox", "--schedule", "tiny", "--device", "cpu",
            "--no-progress", "--threads", "1"]
    assert cli.main(argv) == 0
    model, meta = load_blackbox(out / "unet_blackbox.safetensors")
    prov = meta["provenance"]
    assert prov["steps"] == SCHEDULES["tiny"].steps and prov["schedule"]["name"] == "tiny"
    assert prov["created_by"].startswith("adacsc train -o") and prov["skipped_steps"] >= 0
    assert any("val_psnr" in h for h in prov["history"])
    assert cli.main(argv) == 2  # the folder holds a run: a clear error naming --resume, not a traceback


def test_blackbox_run_stopped_and_resumed_trains_the_same_weights(tmp_path, training_volumes):
    """`--stop-after` leaves a checkpoint; `--resume` continues on the same batches, so the weights
    equal those of an uninterrupted run; resuming with another seed is refused."""
    from adacsc import cli
    from adacsc.training.blackbox import load_blackbox

    def train(out, *extra):
        return cli.main(["train", "-o", str(out), "--model", "unet-blackbox", "--schedule", "tiny", "--device", "cpu",
                         "--no-progress", "--threads", "1", *extra])

    assert train(tmp_path / "whole") == 0
    assert train(tmp_path / "parts", "--stop-after", "5") == 0
    assert not (tmp_path / "parts" / "unet_blackbox.safetensors").exists()
    assert (tmp_path / "parts" / "checkpoints" / "latest.json").is_file()
    assert train(tmp_path / "parts", "--resume", "--seed", "1") == 2
    assert train(tmp_path / "parts", "--resume") == 0
    whole, _ = load_blackbox(tmp_path / "whole" / "unet_blackbox.safetensors")
    parts, meta = load_blackbox(tmp_path / "parts" / "unet_blackbox.safetensors")
    assert meta["provenance"]["resumed_from"] == [5]
    for (key, a), b in zip(whole.state_dict().items(), parts.state_dict().values()):
        assert torch.equal(a, b), key


def test_noise_aware_tv_training_on_several_pixel_sizes(tmp_path: Path) -> None:
    schedule = _schedule(network="noise", lowpass="tv", tv_weight=0.5, crop=32, crop_min=20, steps=6,
                         validate_every=3, checkpoint_every=3, final_validation=True, final_val_images=1,
                         lambda_grid=(0.08,))
    sets = [_images(4, size=40), _images(4, size=48, seed=5)]
    train, val = _pools()
    trainer = Trainer(schedule, tmp_path, train_images=sets, val_images=_images(2, seed=1), train_dictionaries=train,
                      val_dictionaries=val, seed=3, progress=False)
    shapes = {tuple(trainer.batch(step)[0].grid_shape) for step in range(12)}
    assert len(shapes) > 2 and all(20 <= n <= 32 and n % 2 == 0 for shape in shapes for n in shape)
    result = trainer.run()
    assert all(np.isfinite(h["loss"]) for h in result.history if "loss" in h)
    network, info = load_model(result.weights)
    assert network.uses_noise
    assert info.scalars["iterations"] == schedule.train_iterations and info.scalars["tv_weight"] == 0.5
    assert result.validation["lowpass"] == "tv"
    with pytest.raises(ValueError, match="lowpass"):
        _schedule(lowpass="median")
    with pytest.raises(ValueError, match="crop_min"):
        _schedule(crop_min=64)


def test_crops_without_signal_are_skipped(tmp_path: Path) -> None:
    schedule = _schedule(network="noise", lowpass="tv", steps=3, checkpoint_every=3, validate_every=0)
    train, val = _pools()
    trainer = Trainer(schedule, tmp_path, train_images=torch.zeros(2, 40, 40, dtype=torch.complex64),
                      val_images=_images(2, seed=1), train_dictionaries=train, val_dictionaries=val, progress=False)
    trainer.run()
    assert trainer.step == 3 and trainer.skipped == 3
