"""Helpers shared by the tests (no tests here): scans, servers, operators, chain gadgets."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""the repository root (README, configs/, docs/, docker/)"""
