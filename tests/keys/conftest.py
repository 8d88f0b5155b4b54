"""SoftHSM2 fixtures for the PKCS#11 keystore tests (real SoftHSM2, no mocks).

``softhsm`` (session): a SoftHSM2 configuration in a temporary directory (``directories.tokendir`` there,
``SOFTHSM2_CONF`` pointing at it for this process and its children) with the tokens of :data:`TOKENS`
initialised by ``softhsm2-util``. SoftHSM2 reads its configuration and token list at ``C_Initialize``, so
every token the tests use is created here, before the module is loaded. Without softhsm2 or python-pkcs11
the tests are skipped — except in CI (env ``CI`` set), where the fixture fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULE_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/local/lib/softhsm/libsofthsm2.so")
#: One token per test module, so modules do not see each other's keys.
TOKENS = ("ck-backend", "ck-issuance", "ck-cli", "ck-errors", "ck-spare")
USER_PIN = "4711-test-pin"
SO_PIN = "so-pin-0815"


@dataclass(frozen=True)
class SoftHsm:
    module: str
    conf: Path
    tokendir: Path
    pin: str
    so_pin: str
    tokens: tuple[str, ...]

    def env(self) -> dict[str, str]:
        """Environment for a child process (the CLI) using this SoftHSM2 setup."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), "CARDKIT_PKCS11_MODULE": self.module}

    def uri(self, token: str) -> str:
        return f"pkcs11:token={token}"


def _missing() -> str | None:
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not installed (Debian: softhsm2)"
    if not any(Path(p).exists() for p in MODULE_CANDIDATES):
        return "libsofthsm2.so is not installed (Debian: softhsm2)"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install 'cardkit[hsm]')"
    return None


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but SoftHSM2 is not usable: {missing}")
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("softhsm")
    tokendir = root / "tokens"
    tokendir.mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n"
                    "slots.removable = false\n", encoding="utf-8")
    module = next(p for p in MODULE_CANDIDATES if Path(p).exists())
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    for label in TOKENS:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", USER_PIN,
                        "--so-pin", SO_PIN], check=True, capture_output=True, env=env, timeout=60)
    mp = pytest.MonkeyPatch()
    mp.setenv("SOFTHSM2_CONF", str(conf))
    try:
        yield SoftHsm(module, conf, tokendir, USER_PIN, SO_PIN, TOKENS)
    finally:
        mp.undo()


@pytest.fixture
def hsm_env(softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    """``softhsm`` with the module and PIN in the environment, as an operator would set them."""
    monkeypatch.setenv("CARDKIT_PKCS11_MODULE", softhsm.module)
    monkeypatch.setenv("CARDKIT_PKCS11_PIN", softhsm.pin)
    return softhsm
