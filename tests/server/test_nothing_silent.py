"""Nothing a client sends is dropped silently or answered with a traceback (issue 19, items 6-8)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adacsc import resources
from adacsc.chain.config import ChainError, load_chain
from adacsc.io.dataset import DatasetError, InputScan
from adacsc.chain.runner import Chain
from adacsc.server import protocol as proto
from adacsc.server.parameters import ParameterError, looks_like_json, parse_json_parameters
from adacsc.simulation.small_scan import write_small_scan
from support.server import FRONTEND, error_texts, exchange, scan_messages, threaded_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server():
    with threaded_server(workers=2, io_timeout_s=10.0) as running:
        yield running


def _scan_with_text(scan: Path, text: str) -> bytes:
    header, acquisitions = scan_messages(scan)
    return (proto.config_file_message(FRONTEND) + proto.header_message(header) + proto.text_message(text)
            + b"".join(acquisitions) + proto.close_message())


def _warnings(replies: list[proto.Message]) -> list[str]:
    return [m.payload for m in replies if m.mid == proto.TEXT and m.payload.startswith("WARNING")]


def _images(replies: list[proto.Message]) -> list[proto.Message]:
    return [m for m in replies if m.mid == proto.IMAGE]


def test_a_chain_whose_configuration_cannot_be_xml_fails_when_it_is_built(small_scan):
    header, _ = scan_messages(small_scan)
    chain = load_chain(FRONTEND, allow_paths=False).with_overrides({"coil_combination.output": "ima\x00ges"})
    with pytest.raises(ChainError, match="node coil_combination is not valid XML"):
        Chain(chain, header, lambda item: None)


@pytest.mark.parametrize("text, named", [
    ('{"parameters": {"dictionary": "x\\u0000y"}}', "'dictionary': its value holds the control character U+0000"),
    ('{"parameters": {"iterations": 1' + "0" * 5000 + "}}", "'iterations': a number of 5001 characters"),
])
def test_unusable_parameter_values_are_refused_by_name(text, named, small_scan, server):
    replies = exchange(server.port, _scan_with_text(small_scan, text))
    warnings = _warnings(replies)
    assert any(named in text for text in warnings), warnings
    assert not error_texts(replies) and len(_images(replies)) == 2 and replies[-1].mid == proto.CLOSE


def test_deeply_nested_json_is_refused_naming_where(small_scan, server):
    text = '{"parameters": {"deep": ' + "[" * 5000 + "]" * 5000 + "}}"
    replies = exchange(server.port, _scan_with_text(small_scan, text))
    warnings = _warnings(replies)
    assert any("nest deeper than 32 levels at 'parameters.deep'" in text for text in warnings), warnings
    assert not error_texts(replies) and len(_images(replies)) == 2


def test_json_with_a_byte_order_mark_is_used(small_scan, server):
    text = "\ufeff" + json.dumps({"parameters": {"coil_combination.image_series_index": 7}})
    assert looks_like_json(text) and parse_json_parameters(text).properties
    replies = exchange(server.port, _scan_with_text(small_scan, text))
    assert {image.payload.image_series_index for image in _images(replies)} == {7}


def test_parameters_nested_deeply_never_reach_a_recursive_parser():
    with pytest.raises(ParameterError, match="at 'parameters.a.b'"):
        parse_json_parameters('{"parameters": {"a": {"b": ' + "[" * 40 + "]" * 40 + "}}}")
    assert parse_json_parameters('{"parameters": {"s": "[[[[{{{{"}}').properties == {"s": "[[[[{{{{"}


def test_an_ambiguous_bare_parameter_is_an_error_naming_the_gadgets(small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    stream = (proto.config_file_message("adacsc_lowfield") + proto.header_message(header)
              + proto.text_message(json.dumps({"parameters": {"image_series_index": 65534}}))
              + b"".join(acquisitions) + proto.close_message())
    errors = error_texts(exchange(server.port, stream))
    assert errors and "accepted by 2 nodes (coil_combination, csc)" in errors[0], errors
    assert "coil_combination.image_series_index=65534" in errors[0]


def test_errors_sent_to_clients_name_folders_by_role_not_by_path(small_scan, server):
    header, acquisitions = scan_messages(small_scan)
    stream = (proto.config_file_message("adacsc_lowfield") + proto.header_message(header)
              + proto.text_message(json.dumps({"parameters": {"dictionary": "no_such_dictionary"}}))
              + b"".join(acquisitions) + proto.close_message())
    errors = error_texts(exchange(server.port, stream))
    assert errors and "no dictionary named 'no_such_dictionary' in <shipped data/dictionaries>" in errors[0], errors
    shipped = str(resources.package_data())
    assert shipped not in errors[0] and str(Path(shipped).resolve()) not in errors[0]


def test_a_locked_input_file_is_reported_as_locked(tmp_path):
    scan = write_small_scan(tmp_path / "locked.h5", lines=8, slices=1, noise=2)
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1], 'a'); "
                               "print('open', flush=True); sys.stdin.read()", str(scan)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(DatasetError, match="locked by another program"):
            InputScan(scan)
    finally:
        holder.stdin.close()
        holder.stdout.close()
        holder.wait(30)
    InputScan(scan).close()


def test_files_in_operator_folders_are_named_relative_to_them(tmp_path, monkeypatch):
    folder = tmp_path / "dictionaries"
    folder.mkdir()
    monkeypatch.setenv("ADACSC_DICTIONARY_DIR", str(folder))
    text = f"cannot read dictionary file {folder / 'mine.npz'}: truncated"
    assert resources.without_folders(text) == "cannot read dictionary file $ADACSC_DICTIONARY_DIR/mine.npz: truncated"
    assert resources.without_folders(f"{tmp_path}/chains/x.xml", [tmp_path / "chains"]) == "--config-dir/x.xml"
