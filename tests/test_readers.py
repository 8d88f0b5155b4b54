"""Reader specifications: the default virtual card (persisted image with an ISD), virtual:IMAGE."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cardkit.cli.main import cli
from cardkit.readers import new_virtual_card, open_session
from cardkit.virtual.gp import find_isd


def test_virtual_image_is_created_with_an_isd_and_kept(tmp_path: Path) -> None:
    image = tmp_path / "card.json"
    with open_session(f"virtual:{image}") as s:
        assert s.send(bytes.fromhex("00A4040000")).data[:1] == b"\x6f"  # empty AID selects the ISD
        s.send(bytes.fromhex("00A40000023F00"))
    assert image.exists() and oct(image.stat().st_mode & 0o777) == "0o600"
    data = json.loads(image.read_text())
    assert "gp" in data
    with open_session(f"virtual:{image}") as s:  # the same card (same serial) comes back
        assert bytes.fromhex(data["serial"]) == s.atr[6:10]  # chip serial in the historical bytes


def test_gp_info_on_the_default_virtual_card(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["--reader", f"virtual:{tmp_path / 'c.json'}", "--json", "gp", "info"])
    assert res.exit_code == 0, res.output
    assert "A000000151000000" in res.output.upper()


def test_library_cards_have_no_isd_unless_asked() -> None:
    assert find_isd(new_virtual_card()) is None
    assert find_isd(new_virtual_card(gp_keys="test")) is not None
