"""A bare `--set NAME=VALUE` that several gadgets accept (issue 19, item 10): when the value
does not suit them all, recon, send and the server name the gadgets and suggest `node.NAME`."""

from pathlib import Path

import pytest

from adacsc.chain.config import AmbiguousProperty, load_chain
from adacsc.cli import main
from adacsc.simulation.small_scan import write_small_scan

SUGGESTION = ("property 'output' is accepted by 2 nodes (coil_combination, csc) and 'int16' is not valid for "
              "coil_combination; set it on one node, e.g. csc.output=int16")


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    return write_small_scan(tmp_path / "scan.h5", lines=16, slices=1, noise=4)


def test_recon_and_send_name_the_matching_gadgets(scan, tmp_path, caplog):
    assert main(["recon", str(scan), "-o", str(tmp_path / "r.h5"), "--no-progress", "--set", "output=int16"]) == 2
    assert SUGGESTION in caplog.text
    caplog.clear()
    assert main(["send", str(scan), "-o", str(tmp_path / "s.h5"), "--port", "1", "--set", "output=int16"]) == 2
    assert SUGGESTION in caplog.text
    assert not list(tmp_path.glob("*.h5*"))[1:]  # only the input


def test_a_value_every_matching_gadget_accepts_still_sets_them_all():
    chain = load_chain("adacsc_lowfield", allow_paths=False).with_overrides({"image_series_index": "5"})
    assert {node.target for node in chain.nodes if node.configuration.find("property[@name='image_series_index']")
            is not None} >= {"coil_combination", "csc"}
    with pytest.raises(AmbiguousProperty, match="not valid for coil_combination, csc; set it per node"):
        load_chain("adacsc_lowfield", allow_paths=False).with_overrides({"output": "nonsense"})
