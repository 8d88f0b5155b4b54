"""Keystores: where master keys live, referred to by name.

This module holds the :class:`Keystore` protocol and the TEST key-file backend. Test key files are
refused unless explicitly allowed (``allow_test_keys=True``, CLI ``--allow-test-keys``), and every use
logs a warning: they hold well-known values that must never protect a real card.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cardkit.crypto import Alg, check_key, kcv
from cardkit.crypto.diversify import chain
from cardkit.crypto.kcv import default_kcv_method
from cardkit.errors import CryptoError, KeystoreError

__all__ = ["KeyMaterial", "Keystore", "TestKeyFile", "alg_of"]

log = logging.getLogger(__name__)

_ALGS = {"sm4": Alg.SM4, "3des": Alg.DES3, "aes": Alg.AES}


def alg_of(name: str) -> Alg:
    try:
        return _ALGS[name]
    except KeyError:
        raise KeystoreError(f"unknown algorithm {name!r} (known: {', '.join(_ALGS)})") from None


@dataclass(frozen=True)
class KeyMaterial:
    """A key value with its algorithm. ``repr`` shows the KCV, never the value."""

    name: str
    alg: Alg
    value: bytes = field(repr=False)

    @property
    def kcv(self) -> str:
        return kcv(self.value, default_kcv_method(self.alg)).hex().upper()

    def __repr__(self) -> str:
        return f"KeyMaterial({self.name!r}, {self.alg.value}, kcv={self.kcv})"


class Keystore(Protocol):
    """Gives master keys by name and algorithm, and derives card keys from them."""

    def key(self, name: str, alg: Alg) -> KeyMaterial: ...

    def derive(self, name: str, alg: Alg, levels: list[bytes]) -> KeyMaterial:
        """The master key ``name`` diversified level by level (:func:`cardkit.crypto.diversify.chain`)."""
        ...


class TestKeyFile:
    """TEST ONLY keys from a TOML file (``keys/test/*.toml``)::

        test_only = true
        [[key]]
        name = "ssc-transport"
        alg = "sm4"
        value = "00112233..."
    """

    __test__ = False  # not a pytest test class

    def __init__(self, path: str | Path, *, allow_test_keys: bool = False) -> None:
        self.path = Path(path)
        if not allow_test_keys:
            raise KeystoreError(f"{self.path} holds TEST keys; refusing to use them without --allow-test-keys")
        try:
            doc = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise KeystoreError(f"cannot read test key file {self.path}: {exc}") from None
        if doc.get("test_only") is not True:
            raise KeystoreError(f"{self.path} is not labelled 'test_only = true'")
        self._keys: dict[tuple[str, Alg], bytes] = {}
        for i, entry in enumerate(doc.get("key", [])):
            try:
                name, alg, value = entry["name"], alg_of(entry["alg"]), bytes.fromhex(entry["value"])
                check_key(alg, value)
            except (KeyError, ValueError, CryptoError, KeystoreError) as exc:
                raise KeystoreError(f"{self.path}: key entry {i} is invalid ({type(exc).__name__})") from None
            self._keys[(name, alg)] = value
        log.warning("using TEST keys from %s — never for real cards", self.path.name)

    def names(self) -> list[tuple[str, Alg]]:
        return sorted(self._keys, key=lambda k: (k[0], k[1].value))

    def key(self, name: str, alg: Alg) -> KeyMaterial:
        try:
            return KeyMaterial(name, alg, self._keys[(name, alg)])
        except KeyError:
            raise KeystoreError(f"key {name!r} ({alg.value}) not found in {self.path.name}") from None

    def derive(self, name: str, alg: Alg, levels: list[bytes]) -> KeyMaterial:
        master = self.key(name, alg)
        return KeyMaterial(f"{name}/derived", alg, chain(master.value, alg, levels))
