"""Keystores: where master keys live, referred to by name.

One interface everywhere a key is needed:

* :class:`Keystore` — what the issuance engine uses: ``key(name, alg)`` (a key whose VALUE must reach the
  host, e.g. a batch transport key) and ``derive(name, alg, levels)`` (a per-card key diversified from a
  master key; its value reaches the host because the card key has to be sent to the card inside the
  SM-protected PUT KEY).
* :class:`KeyCustody` — what a keystore adds for key custody: an inventory (:meth:`~KeyCustody.entries`,
  names / algorithms / versions / KCVs, never values), :class:`KeyHandle`\\ s that encrypt / CMAC *inside*
  the keystore without exposing the value (:meth:`~KeyCustody.handle`, :meth:`~KeyCustody.derive_handle`),
  and :class:`Signer`\\ s (ECDSA P-256, RSA) for manifests and EF.SOD.
* :class:`KeyAdmin` — ceremonies on a writable keystore: generate, import, delete, wrap, unwrap.

Backends: :class:`TestKeyFile` (here; TEST keys, refused unless allowed),
:class:`cardkit.keys.encrypted.EncryptedKeystore` (AES-256-GCM file) and
:class:`cardkit.keys.pkcs11.Pkcs11Keystore` (an HSM through PKCS#11). Open any of them from a key URI with
:func:`cardkit.keys.uri.open_keystore`.

Extractability is the same policy in every custody backend: a key created with ``extractable=False`` (the
default for master keys) never gives its value through :meth:`Keystore.key`; only keys diversified from it
do (:meth:`Keystore.derive`). Test key files hold well-known values and give everything.
"""

from __future__ import annotations

import enum
import logging
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from cardkit.crypto import Alg, KcvMethod, check_key, ecb_encrypt, kcv
from cardkit.crypto.diversify import chain
from cardkit.crypto.kcv import default_kcv_method
from cardkit.crypto.mac import cmac
from cardkit.crypto.sym import cbc_encrypt
from cardkit.errors import CryptoError, KeystoreError

__all__ = [
    "KEY_NAME_RE",
    "KeyAdmin",
    "KeyCustody",
    "KeyHandle",
    "KeyInfo",
    "KeyMaterial",
    "Keystore",
    "SignAlg",
    "Signer",
    "SoftwareKeyHandle",
    "TestKeyFile",
    "Usage",
    "WrappedKey",
    "alg_of",
    "all_kcvs",
    "check_key_name",
    "kcv_methods_for",
    "split_version",
]

log = logging.getLogger(__name__)

_ALGS = {"sm4": Alg.SM4, "3des": Alg.DES3, "aes": Alg.AES}

#: Key names: a letter or digit, then letters, digits, ``.``, ``_``, ``-`` (at most 64 characters).
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def alg_of(name: str) -> Alg:
    try:
        return _ALGS[name]
    except KeyError:
        raise KeystoreError(f"unknown algorithm {name!r} (known: {', '.join(_ALGS)})") from None


class SignAlg(enum.Enum):
    """Signing key algorithms (FIPS 186-5 ECDSA over P-256 with SHA-256; RSA per RFC 8017)."""

    ECDSA_P256 = "ecdsa-p256"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"

    @classmethod
    def parse(cls, text: str) -> SignAlg:
        try:
            return cls(text)
        except ValueError:
            raise KeystoreError(f"unknown signing algorithm {text!r} (known: "
                                f"{', '.join(a.value for a in cls)})") from None


class Usage(enum.Enum):
    """What a secret key may do. ``master``: diversify, encrypt, CMAC; ``kek``: wrap and unwrap only."""

    MASTER = "master"
    KEK = "kek"


def check_key_name(name: str) -> str:
    if not isinstance(name, str) or not KEY_NAME_RE.match(name):
        raise KeystoreError(f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
                            "(starting with a letter or digit)")
    return name


def split_version(ref: str) -> tuple[str, int | None]:
    """``"name@3"`` → ``("name", 3)``; ``"name"`` → ``("name", None)`` (the latest version)."""
    name, sep, ver = ref.partition("@")
    check_key_name(name)
    if not sep:
        return name, None
    if not ver.isdigit() or int(ver) < 1:
        raise KeystoreError(f"invalid key version in {ref!r}: expected NAME@N with N >= 1")
    return name, int(ver)


def kcv_methods_for(alg: Alg) -> tuple[KcvMethod, ...]:
    """Every KCV method that applies to ``alg`` (AES has two: GP and ANSI X9.24-1 CMAC)."""
    if alg is Alg.AES:
        return (KcvMethod.AES_GP, KcvMethod.AES_CMAC)
    return (default_kcv_method(alg),)


def all_kcvs(alg: Alg, value: bytes) -> dict[str, str]:
    """``{method: KCV hex}`` for every method of ``alg`` (stored with keys so KEKs need no encrypt right)."""
    return {m.value: kcv(value, m).hex().upper() for m in kcv_methods_for(alg)}


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


@dataclass(frozen=True)
class KeyInfo:
    """What a keystore may tell about a key: never its value.

    ``alg`` is a symmetric :class:`Alg` value (``aes``/``3des``/``sm4``) or a :class:`SignAlg` value.
    ``kcvs`` maps a :class:`KcvMethod` value to the KCV (secret keys); for signing keys ``kcv`` is the
    first 8 bytes of SHA-256 over the SubjectPublicKeyInfo and ``kcv_method`` is ``spki-sha256``.
    """

    name: str
    alg: str
    version: int
    bits: int
    kcv: str
    kcv_method: str
    usage: str
    extractable: bool
    origin: str
    created: str | None = None
    kcvs: Mapping[str, str] = field(default_factory=dict)
    custodians: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "alg": self.alg, "version": self.version, "bits": self.bits, "kcv": self.kcv,
                "kcv_method": self.kcv_method, "kcvs": dict(self.kcvs), "usage": self.usage,
                "extractable": self.extractable, "origin": self.origin, "created": self.created,
                "custodians": list(self.custodians)}


@dataclass(frozen=True)
class WrappedKey:
    """A key wrapped under a KEK with AES key wrap (RFC 3394 ``aes-kw`` or RFC 5649 ``aes-kwp``).

    The wrapped bytes are safe to move; the metadata lets the receiver check the unwrapped key by KCV.
    """

    name: str
    alg: str
    version: int
    kcv: str
    kcv_method: str
    kek: str
    kek_kcv: str
    mechanism: str
    wrapped: bytes = field(repr=False)
    usage: str = Usage.MASTER.value

    FORMAT = "cardkit-wrapped-key"

    def to_dict(self) -> dict[str, object]:
        return {"format": self.FORMAT, "format_version": 1, "key_id": self.name, "alg": self.alg,
                "key_version": self.version, "kcv": self.kcv, "kcv_method": self.kcv_method, "usage": self.usage,
                "kek_id": self.kek, "kek_kcv": self.kek_kcv, "mechanism": self.mechanism,
                "wrapped": self.wrapped.hex().upper()}

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> WrappedKey:
        if not isinstance(doc, Mapping) or doc.get("format") != cls.FORMAT or doc.get("format_version") != 1:
            raise KeystoreError("not a cardkit wrapped key (format 'cardkit-wrapped-key', version 1)")
        try:
            wrapped = bytes.fromhex(str(doc["wrapped"]))
            version = doc["key_version"]
            if not isinstance(version, int) or isinstance(version, bool):
                raise TypeError("key_version")
            out = cls(check_key_name(str(doc["key_id"])), str(doc["alg"]), version, str(doc["kcv"]),
                      str(doc["kcv_method"]), str(doc["kek_id"]), str(doc["kek_kcv"]), str(doc["mechanism"]),
                      wrapped, str(doc.get("usage", Usage.MASTER.value)))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystoreError(f"wrapped key file is incomplete or malformed ({type(exc).__name__}: "
                                f"{exc if isinstance(exc, KeyError | TypeError) else 'bad hex'})") from None
        if out.mechanism not in ("aes-kw", "aes-kwp"):
            raise KeystoreError(f"unknown wrapping mechanism {out.mechanism!r} (aes-kw = RFC 3394, "
                                "aes-kwp = RFC 5649)")
        alg_of(out.alg)
        return out


@runtime_checkable
class KeyHandle(Protocol):
    """A secret key used where it lives (token or store): the value is not reachable through the handle."""

    name: str
    alg: Alg

    @property
    def length(self) -> int:
        """Key length in bytes."""
        ...

    def encrypt_ecb(self, data: bytes) -> bytes: ...

    def encrypt_cbc(self, data: bytes, iv: bytes | None = None) -> bytes: ...

    def cmac(self, data: bytes) -> bytes:
        """The full CMAC (NIST SP 800-38B) tag: 16 bytes for AES/SM4, 8 for 3DES."""
        ...

    def kcv(self, method: KcvMethod | None = None) -> str: ...

    def close(self) -> None:
        """Forget the key (destroys a temporary token object)."""
        ...


@runtime_checkable
class Signer(Protocol):
    """A private signing key: ``sign`` returns a DER ECDSA signature (RFC 3279 Ecdsa-Sig-Value) or an RSA
    signature (RSASSA-PSS with SHA-256 and salt length 32, or PKCS#1 v1.5, RFC 8017)."""

    name: str
    alg: SignAlg

    def public_key_der(self) -> bytes:
        """SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), DER."""
        ...

    def public_key_pem(self) -> bytes:
        """The same, PEM."""
        ...

    @property
    def key_id(self) -> str:
        """First 8 bytes of SHA-256 over the DER SubjectPublicKeyInfo, hex (the key's KCV in listings; the
        ``key_id`` of :class:`cardkit.issuance.engine.ManifestSigner`, which every Signer satisfies)."""
        ...

    def sign(self, data: bytes, *, pss: bool = True) -> bytes: ...


class Keystore(Protocol):
    """Gives master keys by name and algorithm, and derives card keys from them."""

    def key(self, name: str, alg: Alg) -> KeyMaterial: ...

    def derive(self, name: str, alg: Alg, levels: list[bytes]) -> KeyMaterial:
        """The master key ``name`` diversified level by level (:func:`cardkit.crypto.diversify.chain`)."""
        ...


@runtime_checkable
class KeyCustody(Keystore, Protocol):
    """A keystore with an inventory, in-place key use and signing keys."""

    @property
    def label(self) -> str:
        """Where the keys are (a key URI without secrets), for journals and messages."""
        ...

    def entries(self) -> list[KeyInfo]: ...

    def info(self, name: str, alg: Alg | SignAlg | None = None) -> KeyInfo: ...

    def handle(self, name: str, alg: Alg) -> KeyHandle: ...

    def derive_handle(self, name: str, alg: Alg, levels: Sequence[bytes]) -> KeyHandle: ...

    def signer(self, name: str) -> Signer: ...

    def close(self) -> None: ...


@runtime_checkable
class KeyAdmin(KeyCustody, Protocol):
    """A writable keystore (encrypted store, PKCS#11 token). Ceremonies call these; see
    :mod:`cardkit.keys.ceremony` for the journaled, dual-control versions."""

    def generate(self, name: str, alg: Alg | SignAlg, *, bits: int | None = None, extractable: bool = False,
                 usage: Usage = Usage.MASTER, rotate: bool = False) -> KeyInfo: ...

    def import_key(self, name: str, alg: Alg, value: bytes, *, extractable: bool = False,
                   usage: Usage = Usage.MASTER, origin: str = "imported", custodians: Sequence[str] = (),
                   rotate: bool = False) -> KeyInfo: ...

    def delete(self, name: str, alg: Alg | SignAlg | None = None) -> KeyInfo: ...

    def wrap(self, name: str, alg: Alg, kek: str, *, mechanism: str = "aes-kwp") -> WrappedKey: ...

    def unwrap(self, blob: WrappedKey, kek: str, *, name: str | None = None, extractable: bool = False,
               rotate: bool = False) -> KeyInfo: ...


class SoftwareKeyHandle:
    """A :class:`KeyHandle` over a value held in host memory (test files, the encrypted store)."""

    def __init__(self, name: str, alg: Alg, value: bytes) -> None:
        check_key(alg, value)
        self.name, self.alg = name, alg
        self._value: bytes | None = bytes(value)
        self._length = len(value)

    @property
    def length(self) -> int:
        return self._length

    def _v(self) -> bytes:
        if self._value is None:
            raise KeystoreError(f"key handle {self.name!r} is closed")
        return self._value

    def encrypt_ecb(self, data: bytes) -> bytes:
        return ecb_encrypt(self.alg, self._v(), data)

    def encrypt_cbc(self, data: bytes, iv: bytes | None = None) -> bytes:
        return cbc_encrypt(self.alg, self._v(), data, iv)

    def cmac(self, data: bytes) -> bytes:
        return cmac(self.alg, self._v(), data)

    def kcv(self, method: KcvMethod | None = None) -> str:
        return kcv(self._v(), method or default_kcv_method(self.alg)).hex().upper()

    def close(self) -> None:
        self._value = None

    def __enter__(self) -> SoftwareKeyHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SoftwareKeyHandle({self.name!r}, {self.alg.value})"


class TestKeyFile:
    """TEST ONLY keys from a TOML file (``keys/test/*.toml``)::

        test_only = true
        [[key]]
        name = "ssc-transport"
        alg = "sm4"
        value = "00112233..."

    Every key is extractable (the values are public anyway); there are no signing keys, versions are 1.
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

    @property
    def label(self) -> str:
        return f"file:{self.path}"

    def names(self) -> list[tuple[str, Alg]]:
        return sorted(self._keys, key=lambda k: (k[0], k[1].value))

    def _lookup(self, name: str, alg: Alg) -> bytes:
        base, version = split_version(name)
        try:
            value = self._keys[(base, alg)]
        except KeyError:
            raise KeystoreError(f"key {base!r} ({alg.value}) not found in {self.path.name}") from None
        if version not in (None, 1):
            raise KeystoreError(f"key {base!r} ({alg.value}) has only version 1 in {self.path.name}")
        return value

    def key(self, name: str, alg: Alg) -> KeyMaterial:
        return KeyMaterial(split_version(name)[0], alg, self._lookup(name, alg))

    def derive(self, name: str, alg: Alg, levels: list[bytes]) -> KeyMaterial:
        master = self.key(name, alg)
        return KeyMaterial(f"{master.name}/derived", alg, chain(master.value, alg, levels))

    def entries(self) -> list[KeyInfo]:
        out = []
        for name, alg in self.names():
            value = self._keys[(name, alg)]
            kcvs = all_kcvs(alg, value)
            method = default_kcv_method(alg).value
            out.append(KeyInfo(name, alg.value, 1, len(value) * 8, kcvs[method], method, Usage.MASTER.value, True,
                               "test-file", None, kcvs))
        return out

    def info(self, name: str, alg: Alg | SignAlg | None = None) -> KeyInfo:
        base, _ = split_version(name)
        found = [e for e in self.entries() if e.name == base and (alg is None or e.alg == alg.value)]
        if not found:
            raise KeystoreError(f"key {base!r} not found in {self.path.name}")
        if len(found) > 1:
            raise KeystoreError(f"key {base!r} exists for several algorithms in {self.path.name}; name one")
        return found[0]

    def handle(self, name: str, alg: Alg) -> KeyHandle:
        return SoftwareKeyHandle(split_version(name)[0], alg, self._lookup(name, alg))

    def derive_handle(self, name: str, alg: Alg, levels: Sequence[bytes]) -> KeyHandle:
        d = self.derive(name, alg, list(levels))
        return SoftwareKeyHandle(d.name, alg, d.value)

    def signer(self, name: str) -> Signer:
        raise KeystoreError(f"test key file {self.path.name} holds no signing keys")

    def close(self) -> None:
        """Nothing to release (kept for the :class:`KeyCustody` interface)."""
