"""The adaptive low-pass option trained: a tiny fine-tuning run starts the "noise-tv" network from
the shipped weights, writes weights that load without pickle and record how they were made, and the
gadget chain reconstructs a scan with them (its images independent of the filters' order)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from adacsc.chain.config import load_chain
from adacsc.core.dictionary import random_dictionary
from adacsc.io.dictionary_file import load_named_dictionary, save_dictionary
from adacsc.io.weights_file import load_model, load_named_model
from adacsc.replay import replay
from adacsc.simulation.phantom import phantom_slices
from adacsc.training.pools import DictionaryPool
from adacsc.training.schedules import SCHEDULES, get_schedule
from adacsc.training.trainer import Trainer
from support.scans import image_stack, read_images


def _images(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    positions = np.linspace(-30.0, 20.0, n)
    return torch.from_numpy(phantom_slices(size, positions, fov_mm=200.0, rng=np.random.default_rng(seed)))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights of a tiny fine-tuning run (4 steps) from netv3_lowfield_tv."""
    out = tmp_path_factory.mktemp("finetune")
    shipped = SCHEDULES["cpu-lowfield-adaptive"]
    schedule = get_schedule("tiny", steps=4, checkpoint_every=2, validate_every=2, val_images=2,
                            final_validation=False, network=shipped.network, lowpass="tv",
                            init_weights=shipped.init_weights, noise_level=(0.05, 0.2))
    trainer = Trainer(schedule, out, train_images=_images(6), val_images=_images(2, seed=1),
                      train_dictionaries=DictionaryPool([random_dictionary(8, 5, seed=1),
                                                         random_dictionary(6, 7, seed=2)]),
                      val_dictionaries=DictionaryPool([random_dictionary(5, 5, seed=3)]), seed=3,
                      name="adaptive", progress=False)
    source, _ = load_named_model(shipped.init_weights)
    with torch.no_grad():  # step 0 is the shipped network, with no-op new parts
        first = trainer.network.unet.encoder[0][0].weight
        assert torch.equal(first[:, :3], source.unet.encoder[0][0].weight) and not first[:, 3:].any()
    result = trainer.run()
    assert result is not None and result.steps == 4 and trainer.skipped == 0
    return result.weights


def test_fine_tuned_weights_load_and_record_their_start(tuned: Path) -> None:
    assert tuned.read_bytes()[:1] != b"\x80"  # safetensors, not a pickle
    network, info = load_model(tuned)
    assert network.config.lowpass_input and network.config.tv_map
    assert info.scalars["tv_weight"] == SCHEDULES["cpu-lowfield-adaptive"].tv_weight
    schedule = info.provenance["schedule"]
    assert schedule["init_weights"] == "netv3_lowfield_tv" and schedule["network"] == "noise-tv"
    assert network.tv_unet.head.weight.abs().max() > 0  # training moved the new parts


def test_the_chain_reconstructs_with_fine_tuned_weights(
        tuned: Path, sim_scan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dictionaries = tmp_path / "dictionaries"
    dictionaries.mkdir()
    base = load_named_dictionary("cdl_k32_9x9_l0.01")
    save_dictionary(base, dictionaries / "same.npz")
    save_dictionary(base.permuted(np.random.default_rng(0).permutation(base.num_filters)),
                    dictionaries / "permuted.npz")
    monkeypatch.setenv("ADACSC_WEIGHTS_DIR", str(tuned.parent))
    monkeypatch.setenv("ADACSC_DICTIONARY_DIR", str(dictionaries))
    outputs = {}
    for name in ("same.npz", "permuted.npz"):
        chain = load_chain("adacsc_lowfield").with_overrides({"weights": "adaptive", "dictionary": name})
        result = replay(sim_scan, tmp_path / f"{name}.h5", chain)
        assert result.images["image_1"] == 2
        series = read_images(tmp_path / f"{name}.h5")
        assert series["image_1"][0].meta["LowPass"] == "tv"
        outputs[name] = image_stack(series["image_1"])
        assert np.isfinite(outputs[name]).all() and outputs[name].max() > 0
    scale = np.abs(outputs["same.npz"]).max()
    assert np.abs(outputs["same.npz"] - outputs["permuted.npz"]).max() < 1e-4 * scale


def test_added_parts_train_at_their_own_rate(tmp_path: Path) -> None:
    """Schedule.lr_new: the TV-weight U-Net a fine-tuning run adds gets its own Adam group and rate,
    every trained tensor keeps the small rate, and a step at these rates moves the zero head."""
    shipped = SCHEDULES["cpu-lowfield-adaptive-lrnew"]
    assert shipped.lr_new == 5e-3 and shipped.lr == SCHEDULES["cpu-lowfield-adaptive"].lr
    schedule = get_schedule("tiny", steps=1, checkpoint_every=1, validate_every=0, final_validation=False,
                            network=shipped.network, lowpass="tv", init_weights=shipped.init_weights,
                            lr=shipped.lr, lr_new=shipped.lr_new, warmup_steps=0, noise_level=(0.05, 0.2))
    trainer = Trainer(schedule, tmp_path, train_images=_images(4), val_images=_images(2, seed=1),
                      train_dictionaries=DictionaryPool([random_dictionary(8, 5, seed=1)]),
                      val_dictionaries=DictionaryPool([random_dictionary(5, 5, seed=3)]), seed=3,
                      name="rates", progress=False)
    by_rate = {group["base_lr"]: group["params"] for group in trainer.optimizer.param_groups}
    assert sorted(by_rate) == sorted([shipped.lr, schedule.lr_beta, shipped.lr_new])
    named = dict(trainer.network.named_parameters())
    new = {n for n, p in named.items() if any(p is q for q in by_rate[shipped.lr_new])}
    assert new == {n for n in named if n.startswith("tv_unet.")}
    assert len(by_rate[shipped.lr]) == len(named) - len(new)
    assert trainer.run() is not None
    assert trainer.network.tv_unet.head.weight.abs().max() > 0


def test_lr_new_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lr_new"):
        get_schedule("tiny", lr_new=0.0)
