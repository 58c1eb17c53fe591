"""`adacsc serve --config site.yaml`: a file holding every setting, checked with its line named,
overridden by the environment and then by flags, and shown by --print-config."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adacsc.cli import main
from adacsc.client import send_scan
from adacsc.commands import site_config
from adacsc.server.notify import PORT
from adacsc.simulation.small_scan import write_small_scan
from support.server import FRONTEND, Notifications

pytestmark = pytest.mark.timeout(120)


def print_config(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert main(["serve", *argv, "--print-config"]) == 0
    return capsys.readouterr().out


def sources(text: str) -> dict[str, tuple[object, str]]:
    """key -> (value, source) from --print-config's output."""
    found, group = {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.startswith(" "):
            group = line.rstrip(":")
            continue
        name, rest = line.strip().split(": ", 1)
        value, source = rest.rsplit("  # ", 1)
        found[f"{group}.{name}"] = (yaml.safe_load(value), source)
    return found


def every_setting(tmp_path: Path, **changes: object) -> Path:
    """A site config holding every key (the defaults with `changes`), as a site would keep it."""
    document: dict = {}
    for key in site_config.KEYS:
        group, name = key.key.split(".")
        document.setdefault(group, {})[name] = None
    defaults = {"server.host": "127.0.0.1", "server.port": 0, "server.workers": 2, "server.max_waiting": 8,
                "server.wait_s": 30, "server.grace_s": 5, "server.strict": False, "server.error_format": "text",
                "server.allow_modules": [], "server.preload": False, "server.warm_up": False,
                "server.slice_workers": 1, "timeouts.io_s": 60, "timeouts.header_s": 5, "timeouts.message_s": 5,
                "timeouts.write_stall_s": 10, "timeouts.scan_s": 120,
                "limits.max_text_mb": 4, "limits.max_readout_mb": 16, "limits.max_scan_gb": 1,
                "limits.max_matrix": 1024, "limits.max_channels": 32, "limits.max_iterations": 500,
                "folders.configs": [str(tmp_path)], "folders.dictionaries": str(tmp_path),
                "folders.weights": str(tmp_path), "folders.noise": str(tmp_path / "noise"),
                "logging.level": "INFO", "metrics.host": "127.0.0.1", "metrics.port": 0, "health.port": None}
    defaults.update({key.replace("__", "."): value for key, value in changes.items()})
    for key, value in defaults.items():
        group, name = key.split(".")
        document[group][name] = value
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_every_setting_comes_from_the_file_with_its_line(tmp_path, capsys, monkeypatch):
    for key in site_config.KEYS:
        if key.environment:
            monkeypatch.delenv(key.environment, raising=False)
    path = every_setting(tmp_path)
    shown = sources(print_config(capsys, "--config", str(path)))
    assert set(shown) == {key.key for key in site_config.KEYS}
    lines = path.read_text().splitlines()
    for key, (value, source) in shown.items():
        file, line = source.rsplit(":", 1)
        assert file == str(path), key
        assert lines[int(line) - 1].strip().startswith(key.split(".")[1] + ":"), (key, source)
    assert shown["limits.max_channels"][0] == 32 and shown["server.preload"][0] is False
    # the printed settings are themselves a site config that gives the same values
    again = tmp_path / "again.yaml"
    again.write_text(print_config(capsys, "--config", str(path)))
    assert {k: v for k, (v, _) in sources(print_config(capsys, "--config", str(again))).items()} == \
        {k: v for k, (v, _) in shown.items()}


def test_flags_beat_the_environment_which_beats_the_file(tmp_path, capsys, monkeypatch):
    path = every_setting(tmp_path, limits__max_matrix=1000, limits__max_channels=40, server__workers=2)
    monkeypatch.setenv("ADACSC_MAX_MATRIX", "700")
    monkeypatch.setenv("ADACSC_MAX_CHANNELS", "50")
    shown = sources(print_config(capsys, "--config", str(path), "--max-channels", "60"))
    assert shown["limits.max_matrix"] == (700, "$ADACSC_MAX_MATRIX")
    assert shown["limits.max_channels"] == (60, "--max-channels")
    assert shown["server.workers"][0] == 2 and shown["server.workers"][1].startswith(f"{path}:")
    no_file = sources(print_config(capsys))
    assert no_file["server.workers"][1] == "default" and no_file["limits.max_channels"] == (50, "$ADACSC_MAX_CHANNELS")


@pytest.mark.parametrize("text, message", [
    ("server:\n  workers: 2\nlimits:\n  max_matrix: -4\n", r"site\.yaml:4: limits\.max_matrix: -4 is less than"),
    ("server:\n  workers: 2\nlimits:\n  max_matirx: 4\n", r"site\.yaml:4: unknown key 'limits\.max_matirx'"),
    ("server:\n  workers: 2\n\n  wrokers: 3\n", r"site\.yaml:4: unknown key 'server\.wrokers'"),
    ("server:\n  workers: two\n", r"site\.yaml:2: server\.workers: 'two' is not of type 'integer'"),
    ("metrics:\n  port: 70000\n", r"site\.yaml:2: metrics\.port: 70000 is greater than the maximum"),
    ("server:\n  error_format: json\n", r"site\.yaml:2: server\.error_format: 'json' is not one of"),
    ("server:\n  workers: 2\n  workers: 3\n", r"site\.yaml:3: key 'server\.workers' is given twice \(first on line 2\)"),
    ("server:\n  workers: [2\n", r"site\.yaml:3: not valid YAML"),
    ("- 1\n- 2\n", r"site\.yaml:1: \(top level\): \[1, 2\] is not of type 'object'"),
])
def test_a_wrong_key_or_value_fails_at_start_naming_the_key_and_line(tmp_path, caplog, text, message):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with caplog.at_level(logging.ERROR):
        assert main(["serve", "--config", str(path), "--no-preload", "--port", "0"]) == 2
    assert re.search(message, caplog.text), caplog.text


def test_a_wrong_environment_value_is_named(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("ADACSC_SLICE_WORKERS", "0")
    with caplog.at_level(logging.ERROR):
        assert main(["serve", "--print-config"]) == 2
    assert "$ADACSC_SLICE_WORKERS='0': server.slice_workers: 0 is less than the minimum of 1" in caplog.text


def test_the_server_runs_with_the_settings_of_the_file(tmp_path):
    """A server started from a file holding every setting applies them: the file's channel limit
    refuses a 4-coil scan and a 2-coil scan goes through."""
    path = every_setting(tmp_path, limits__max_channels=2, metrics__port=None)
    log_path = tmp_path / "server.log"
    notes = Notifications()
    with open(log_path, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "adacsc", "serve", "--config", str(path)],
                                   stdout=out, stderr=subprocess.STDOUT, env=notes.environment())
    try:
        port = int(notes.wait(PORT, process=process))
        log = log_path.read_text()
        assert f"listening on 127.0.0.1:{port} (2 workers" in log and f"site config {path}" in log, log
        refused = send_scan(write_small_scan(tmp_path / "four.h5", coils=4), None, port=port, config_name=FRONTEND)
        assert not refused.ok and "receiverChannels = 4 exceeds the operator limit of 2" in " ".join(refused.errors)
        served = send_scan(write_small_scan(tmp_path / "two.h5", coils=2), None, port=port, config_name=FRONTEND)
        assert served.ok and served.images == {"image_1": 2}
    finally:
        process.terminate()
        assert process.wait(60) == 0


def test_a_missing_folder_is_named_with_its_source(tmp_path, caplog, monkeypatch):
    for variable in ("ADACSC_SLICE_WORKERS", "ADACSC_WEIGHTS_DIR", "ADACSC_DICTIONARY_DIR"):
        monkeypatch.delenv(variable, raising=False)  # restored after the test, whatever serve sets
    path = every_setting(tmp_path, folders__dictionaries=str(tmp_path / "nowhere"))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith("dictionaries"))
    with caplog.at_level(logging.ERROR):
        assert main(["serve", "--config", str(path)]) == 2
    assert f"folders.dictionaries: {tmp_path / 'nowhere'} is not a folder ({path}:{line})" in caplog.text
    assert "ADACSC_SLICE_WORKERS" not in os.environ  # nothing exported before the checks passed


def test_relative_folders_are_relative_to_the_site_config(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ADACSC_NOISE_DIR", raising=False)
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "site.yaml"
    path.write_text("folders:\n  configs: [chains, /abs/chains]\n  noise: ../noise\n")
    shown = sources(print_config(capsys, "--config", str(path)))
    assert shown["folders.configs"][0] == [str(tmp_path / "etc" / "chains"), "/abs/chains"]
    assert shown["folders.noise"][0] == str(tmp_path / "etc" / ".." / "noise")


def test_every_serve_option_has_a_site_config_key():
    """A new `serve` option needs a key (and a schema) in adacsc.commands.site_config."""
    from adacsc.cli import build_parser

    parsed = vars(build_parser("serve").parse_args(["serve"]))  # every option's destination, with its default
    options = set(parsed) - {"command", "verbose", "func", "serve_defaults", "config", "print_config"}
    assert options == {key.dest for key in site_config.KEYS}
