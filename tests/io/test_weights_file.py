"""Saving/loading map-network weights (safetensors + JSON metadata)."""

import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from adacsc.core.convolution import Synthesis
from adacsc.core.filter_bank import FilterBank
from adacsc.core.network import MapNetwork, NetworkConfig, V1MapNetwork
from adacsc.io.weights_file import ModelInfo, WeightsError, load_model, read_model_info, save_model


def _inputs(k=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 32, dtype=torch.complex64, generator=g)
    d = torch.randn(k, 7, 7, generator=g)
    return x, Synthesis(FilterBank(d / d.flatten(1).norm(dim=1).view(k, 1, 1)))


def _metadata(model, **changes):
    info = ModelInfo(kind=model.kind, config=model.config, num_filters=getattr(model, "num_filters", None))
    data = info.to_dict()
    data.update(changes)
    return {"adacsc": json.dumps(data)}


# -- round trip ---------------------------------------------------------------------------------
def test_v3_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    config = NetworkConfig(lambda_max=2.0, initial_lambda=0.1)
    model = MapNetwork(config).eval()
    path = tmp_path / "v3.safetensors"
    provenance = {"data": "fastMRI brain", "dictionaries": ["cdl_k32_9x9"], "epochs": 3}
    written = save_model(model, path, scalars={"beta": 0.25}, provenance=provenance)
    assert written.path == path
    loaded, info = load_model(path, "cpu")
    assert isinstance(loaded, MapNetwork) and not loaded.training
    assert info.kind == "v3" and info.config == config and info.lambda_max == 2.0
    assert info.scalars == {"beta": 0.25}
    assert info.provenance == provenance
    assert info.path == path
    x, d = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, d), loaded(x, d))
    assert read_model_info(path).config == config
    # nothing but tensors in the file, the configuration is in the metadata
    assert list(path.parent.iterdir()) == [path]


def test_v1_round_trip(tmp_path):
    torch.manual_seed(0)
    model = V1MapNetwork(6, NetworkConfig(downsample=1)).eval()
    path = tmp_path / "v1.safetensors"
    save_model(model, path)
    loaded, info = load_model(str(path))
    assert isinstance(loaded, V1MapNetwork) and info.kind == "v1" and info.num_filters == 6
    x, d = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, d), loaded(x, d))


def test_save_rejects_bad_arguments(tmp_path):
    model = MapNetwork()
    with pytest.raises(WeightsError, match=".safetensors"):
        save_model(model, tmp_path / "model.pt")
    with pytest.raises(WeightsError, match="finite"):
        save_model(model, tmp_path / "a.safetensors", scalars={"beta": float("nan")})
    with pytest.raises(WeightsError, match="JSON"):
        save_model(model, tmp_path / "b.safetensors", provenance={"when": object()})
    with pytest.raises(TypeError):
        save_model(torch.nn.Linear(2, 2), tmp_path / "c.safetensors")
    save_model(model, tmp_path / "d.safetensors")
    with pytest.raises(WeightsError, match="overwrite"):
        save_model(model, tmp_path / "d.safetensors", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.safetensors"]  # no temporaries left


# -- bad files ----------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "nothing.safetensors")


class _Booby:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_renamed_safetensors_is_never_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"weights": _Booby(str(marker))}))
    # sanity: the payload really would run if unpickled
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    with pytest.raises(WeightsError, match="not a safetensors file.*pickle"):
        load_model(path)
    with pytest.raises(WeightsError, match="not a safetensors file"):
        read_model_info(path)
    assert not marker.exists()


def test_torch_save_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    torch.save(MapNetwork().state_dict(), path)
    with pytest.raises(WeightsError, match="not a safetensors file.*zip"):
        load_model(path)


@pytest.mark.parametrize(
    "content", [b"", b"abc", b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!", b"hello world, this is text"]
)
def test_garbage_files(tmp_path, content):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="not a safetensors file"):
        load_model(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(MapNetwork(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(path)


def test_safetensors_without_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file(MapNetwork().state_dict(), str(path))
    with pytest.raises(WeightsError, match="no adacsc model metadata"):
        load_model(path)


def test_wrong_keys(tmp_path):
    model = MapNetwork()
    state = dict(model.state_dict())
    removed = "unet.head.weight"
    del state[removed]
    state["unet.extra"] = torch.zeros(3)
    path = tmp_path / "keys.safetensors"
    save_file(state, str(path), metadata=_metadata(model))
    message = r"missing tensors \['unet.head.weight'\].*unexpected tensors \['unet.extra'\]"
    with pytest.raises(WeightsError, match=message):
        load_model(path)


def test_shape_mismatch(tmp_path):
    small = MapNetwork(NetworkConfig(base_channels=4))
    path = tmp_path / "shapes.safetensors"
    # metadata claims 8 base channels, tensors are for 4
    save_file(small.state_dict(), str(path), metadata=_metadata(MapNetwork(NetworkConfig(base_channels=8))))
    message = r"tensor 'unet.encoder.0.0.weight' has shape \[4, 2, 3, 3\].*expects \[8, 2, 3, 3\]"
    with pytest.raises(WeightsError, match=message):
        load_model(path)


def test_bad_metadata(tmp_path):
    model = MapNetwork()
    state = model.state_dict()
    cases = [
        ({"adacsc": "{not json"}, "not valid JSON"),
        (_metadata(model, kind="v9"), "unknown network kind"),
        (_metadata(model, format="something-else"), "'format'"),
        (_metadata(model, format_version=99), "unsupported format_version"),
        (_metadata(model, config={"base_channels": 8, "colour": 1}), "unknown network config keys"),
        (_metadata(model, lambda_max=3.0), "disagrees"),
        (_metadata(model, scalars={"beta": "x"}), "finite number"),
        (_metadata(V1MapNetwork(3), num_filters=None), "num_filters"),
    ]
    for i, (metadata, message) in enumerate(cases):
        path = tmp_path / f"meta{i}.safetensors"
        save_file(state, str(path), metadata=metadata)
        with pytest.raises(WeightsError, match=message):
            load_model(path)


def test_non_finite_weights(tmp_path):
    model = MapNetwork()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["unet.head.bias"][0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path), metadata=_metadata(model))
    with pytest.raises(WeightsError, match="NaN or Inf"):
        load_model(path)


def test_header_length_is_checked_before_parsing(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(WeightsError, match="not a safetensors file"):
        load_model(path)
