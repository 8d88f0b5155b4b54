"""Every shipped profile runs as a batch on virtual readers: the eMRTD (content hook, BAC-protected files)
and the GlobalPlatform STORE DATA profile (blank cards arrive with an issuer security domain)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cardkit.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("profile", "keys"), [("mrtd", "mrtd.toml"), ("gp-store-data", "gp.toml")])
def test_shipped_profile_batch(tmp_path: Path, profile: str, keys: str) -> None:
    src = ROOT / "applets" / profile / "sample-batch.csv"
    lines = src.read_text(encoding="utf-8").splitlines()
    small = tmp_path / "batch.csv"
    small.write_text("\n".join(lines[:9]) + "\n", encoding="utf-8")  # header + up to 8 records
    n = len(lines[1:9])
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["batch", "run", str(small), "--profile", profile, "--readers", "virtual:2",
                                   "--keys", str(ROOT / "keys" / "test" / keys), "--allow-test-keys",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    text = json.dumps(report)
    assert '"reconciles": true' in text
    assert len(list((out / "cards").glob("*.json"))) == n
