"""The encrypted keystore file (``store:PATH``): keys encrypted with AES-256-GCM under a passphrase.

File format (UTF-8 JSON object, one file)::

    {"format": "cardkit-keystore", "format_version": 1, "store_id": "<uuid>", "generation": 7,
     "kdf": {"name": "argon2id", "iterations": 3, "memory_kib": 65536, "lanes": 4, "salt": "<b64>"},
     "cipher": "aes-256-gcm", "check": "<b64>", "nonce": "<b64>", "payload": "<b64>"}

* Key derivation: Argon2id (RFC 9106; default t=3, m=64 MiB, p=4 — the "second recommended option" of
  RFC 9106 §4) when the OpenSSL under ``cryptography`` offers it, else scrypt (RFC 7914; N=2^17, r=8, p=1).
  64 bytes are derived from the NFC-normalised passphrase: the first 32 are the AES-256-GCM key (NIST SP
  800-38D), the last 32 key an HMAC-SHA-256 (RFC 2104) over a fixed text whose first 16 bytes are ``check``
  — so a wrong passphrase is told apart from a tampered file.
* The header (every field but ``payload``, canonical JSON: sorted keys, no spaces) is the GCM additional
  authenticated data: changing any header field or any payload byte fails authentication ("tampered").
  The payload (JSON: the key entries with their values) exists in clear only in memory.
* Every write takes an exclusive ``flock`` on ``PATH.lock``, refuses if another process wrote since this
  one opened (``generation``), encrypts with a fresh 96-bit random nonce, writes a temporary file created
  0600 in the same directory, fsyncs it, renames it over the store (atomic on POSIX) and fsyncs the directory.
  A failure leaves the previous file as it was.

Values of keys are held in host memory while the store is open; the store enforces the same extractability
policy as the PKCS#11 backend (see :mod:`cardkit.keys.store`). Replacing the file with an older copy
(rollback) cannot be detected from the file alone: compare ``generation`` with the ceremony journal.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import keywrap
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from cardkit.crypto import Alg, KcvMethod, adjust_des_parity, check_key, kcv
from cardkit.crypto.diversify import chain
from cardkit.crypto.kcv import default_kcv_method
from cardkit.errors import CryptoError, KeystoreError
from cardkit.fsutil import write_private
from cardkit.keys.software import SoftwareSigner, generate_private_pkcs8, spki_fingerprint
from cardkit.keys.store import (
    KeyHandle,
    KeyInfo,
    KeyMaterial,
    SignAlg,
    Signer,
    SoftwareKeyHandle,
    Usage,
    WrappedKey,
    alg_of,
    all_kcvs,
    check_key_name,
    split_version,
)

__all__ = ["FORMAT", "EncryptedKeystore", "KdfParams", "argon2_available"]

log = logging.getLogger(__name__)

FORMAT = "cardkit-keystore"
_CHECK_TEXT = b"cardkit keystore passphrase check v1"
_SALT_LEN = 16  # RFC 9106 §3.1 recommends 16-byte salts (RFC 7914 scrypt: same practice)
_NONCE_LEN = 12  # NIST SP 800-38D §8.2.2: 96-bit random IVs
# Largest KDF memory a keystore header may ask for (1 GiB): a hostile file cannot exhaust the machine.
_MAX_KIB = 1 << 20
_DEFAULT_BITS = {Alg.AES: 128, Alg.DES3: 128, Alg.SM4: 128}


def argon2_available() -> bool:
    try:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        Argon2id(salt=bytes(16), length=32, iterations=1, lanes=1, memory_cost=8)
    except (ImportError, UnsupportedAlgorithm):
        return False
    return True


@dataclass(frozen=True)
class KdfParams:
    """Passphrase KDF parameters. ``cost`` fields: Argon2id (iterations, memory_kib, lanes) or scrypt
    (n, r, p). Bounds on opening keep a hostile header from exhausting memory."""

    name: str
    iterations: int = 0
    memory_kib: int = 0
    lanes: int = 0
    n: int = 0
    r: int = 0
    p: int = 0

    @classmethod
    def default(cls) -> KdfParams:
        if argon2_available():
            return cls("argon2id", iterations=3, memory_kib=65536, lanes=4)  # RFC 9106 §4, second option
        return cls("scrypt", n=1 << 17, r=8, p=1)  # RFC 7914 / OWASP 2023 minimum N=2^17, r=8, p=1

    @classmethod
    def weak_for_tests(cls) -> KdfParams:
        """Cheap parameters for tests only (refused unless ``allow_weak_kdf=True``)."""
        if argon2_available():
            return cls("argon2id", iterations=1, memory_kib=1024, lanes=1)
        return cls("scrypt", n=1 << 10, r=8, p=1)

    def check(self, *, allow_weak: bool = True) -> None:
        if self.name == "argon2id":
            ok = 1 <= self.iterations <= 64 and 8 * self.lanes <= self.memory_kib <= _MAX_KIB and \
                1 <= self.lanes <= 16
            weak = self.iterations < 2 or self.memory_kib < 19456  # RFC 9106 / OWASP minimum 19 MiB, t=2
        elif self.name == "scrypt":
            ok = 2 <= self.n and self.n & (self.n - 1) == 0 and 1 <= self.r <= 32 and 1 <= self.p <= 16 and \
                128 * self.r * self.n <= _MAX_KIB * 1024  # RFC 7914 §2: scrypt uses 128·r·N bytes
            weak = self.n < (1 << 15)
        else:
            raise KeystoreError(f"unknown key derivation {self.name!r} in the keystore header (argon2id, scrypt)")
        if not ok:
            raise KeystoreError(f"keystore KDF parameters out of bounds ({self.to_dict()})")
        if weak and not allow_weak:
            raise KeystoreError(f"KDF parameters too weak for a real keystore ({self.to_dict()})")

    def derive(self, passphrase: str, salt: bytes) -> bytes:
        secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
        if self.name == "argon2id":
            if not argon2_available():
                raise KeystoreError("this keystore uses Argon2id, which the installed cryptography/OpenSSL lacks")
            from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

            return Argon2id(salt=salt, length=64, iterations=self.iterations, lanes=self.lanes,
                            memory_cost=self.memory_kib).derive(secret)
        return Scrypt(salt=salt, length=64, n=self.n, r=self.r, p=self.p).derive(secret)

    def to_dict(self) -> dict[str, Any]:
        if self.name == "argon2id":
            return {"name": self.name, "iterations": self.iterations, "memory_kib": self.memory_kib,
                    "lanes": self.lanes}
        return {"name": self.name, "n": self.n, "r": self.r, "p": self.p}

    @classmethod
    def from_dict(cls, doc: Any) -> KdfParams:
        if not isinstance(doc, dict):
            raise KeystoreError("keystore header: 'kdf' is not an object")
        fields = ("iterations", "memory_kib", "lanes") if doc.get("name") == "argon2id" else ("n", "r", "p")
        values: dict[str, int] = {}
        for f in fields:
            v = doc.get(f)
            if not isinstance(v, int) or isinstance(v, bool):
                raise KeystoreError("keystore header: KDF parameters are missing or not integers")
            values[f] = v
        out = cls(str(doc.get("name")), **values)
        out.check()
        return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise KeystoreError(f"keystore header: {what} is not base64 (damaged file)") from None


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")



@dataclass
class _Entry:
    name: str
    alg: str
    version: int
    bits: int
    usage: str
    extractable: bool
    origin: str
    created: str
    kcvs: dict[str, str]
    custodians: list[str]
    value: bytes = field(repr=False)  # symmetric key value, or PKCS#8 DER of a signing key

    @property
    def symmetric(self) -> bool:
        return self.alg in ("aes", "3des", "sm4")

    def info(self) -> KeyInfo:
        if self.symmetric:
            method = default_kcv_method(alg_of(self.alg)).value
            kcv_text = self.kcvs[method]
        else:
            method, kcv_text = "spki-sha256", self.kcvs["spki-sha256"]
        return KeyInfo(self.name, self.alg, self.version, self.bits, kcv_text, method, self.usage, self.extractable,
                       self.origin, self.created, dict(self.kcvs), tuple(self.custodians))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "alg": self.alg, "version": self.version, "bits": self.bits,
                "usage": self.usage, "extractable": self.extractable, "origin": self.origin,
                "created": self.created, "kcvs": self.kcvs, "custodians": self.custodians,
                "value": _b64(self.value)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> _Entry:
        return cls(str(doc["name"]), str(doc["alg"]), int(doc["version"]), int(doc["bits"]), str(doc["usage"]),
                   bool(doc["extractable"]), str(doc["origin"]), str(doc["created"]), dict(doc["kcvs"]),
                   list(doc.get("custodians", [])), base64.b64decode(doc["value"]))


class EncryptedKeystore:
    """An encrypted keystore file. Open with :meth:`open` (or :func:`cardkit.keys.uri.open_keystore`),
    create with :meth:`create`. Implements :class:`~cardkit.keys.store.KeyAdmin`."""

    def __init__(self, path: Path, header: dict[str, Any], enc_key: bytes, entries: list[_Entry]) -> None:
        self.path = path
        self._header = header
        self._enc_key: bytes | None = enc_key
        self._entries = entries

    # ------------------------------------------------------------------------------------- open / create
    @classmethod
    def create(cls, path: str | os.PathLike[str], passphrase: str, *, kdf: KdfParams | None = None,
               allow_weak_kdf: bool = False) -> EncryptedKeystore:
        p = Path(path)
        if p.exists():
            raise KeystoreError(f"keystore {p} already exists; refusing to overwrite it")
        if len(passphrase) < 12 and not allow_weak_kdf:
            raise KeystoreError("the keystore passphrase must be at least 12 characters")
        params = kdf or KdfParams.default()
        params.check(allow_weak=allow_weak_kdf)
        salt = secrets.token_bytes(_SALT_LEN)
        derived = params.derive(passphrase, salt)
        header: dict[str, Any] = {
            "format": FORMAT, "format_version": 1, "store_id": uuid.uuid4().hex, "generation": 0,
            "kdf": {**params.to_dict(), "salt": _b64(salt)}, "cipher": "aes-256-gcm",
            "check": _b64(hmac.new(derived[32:], _CHECK_TEXT, hashlib.sha256).digest()[:16]),
        }
        store = cls(p, header, derived[:32], [])
        with store._locked(expect_generation=None):
            store._write([])
        log.info("created keystore %s (%s)", p.name, params.name)
        return store

    @classmethod
    def open(cls, path: str | os.PathLike[str], passphrase: str) -> EncryptedKeystore:
        p = Path(path)
        doc = cls._read(p)
        enc_key, entries = cls._decrypt(p, doc, passphrase)
        header = {k: v for k, v in doc.items() if k not in ("nonce", "payload")}
        return cls(p, header, enc_key, entries)

    @staticmethod
    def _read(p: Path) -> dict[str, Any]:
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise KeystoreError(f"keystore {p} does not exist (create it with 'cardkit keys init store:{p}')") \
                from None
        except OSError as exc:
            raise KeystoreError(f"cannot read keystore {p}: {exc.strerror}") from None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise KeystoreError(f"{p} is not a cardkit keystore (not JSON), or it is damaged") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise KeystoreError(f"{p} is not a cardkit keystore (format {FORMAT!r} expected)")
        if doc.get("format_version") != 1:
            raise KeystoreError(f"{p}: keystore format version {doc.get('format_version')!r} is not supported")
        if doc.get("cipher") != "aes-256-gcm":
            raise KeystoreError(f"{p}: unknown keystore cipher {doc.get('cipher')!r} (tampered header?)")
        gen = doc.get("generation")
        if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
            raise KeystoreError(f"{p}: keystore header has no valid generation (tampered header?)")
        return doc

    @staticmethod
    def _decrypt(p: Path, doc: dict[str, Any], passphrase: str) -> tuple[bytes, list[_Entry]]:
        kdf_doc = doc.get("kdf")
        params = KdfParams.from_dict(kdf_doc)
        salt = _unb64(kdf_doc.get("salt") if isinstance(kdf_doc, dict) else None, "salt")
        if len(salt) < 8:
            raise KeystoreError(f"{p}: keystore salt is too short (tampered header?)")
        derived = params.derive(passphrase, salt)
        want = _unb64(doc.get("check"), "check")
        got = hmac.new(derived[32:], _CHECK_TEXT, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(want, got):
            raise KeystoreError(f"wrong passphrase for keystore {p.name} (or its KDF parameters were altered)")
        nonce, payload = _unb64(doc.get("nonce"), "nonce"), _unb64(doc.get("payload"), "payload")
        aad = _canonical({k: v for k, v in doc.items() if k != "payload"})
        try:
            plain = AESGCM(derived[:32]).decrypt(nonce, payload, aad)
        except (InvalidTag, ValueError):
            raise KeystoreError(f"keystore {p.name} is tampered or damaged: its header or contents fail "
                                "authentication (AES-GCM)") from None
        try:
            body = json.loads(plain.decode("utf-8"))
            if body.get("store_id") != doc.get("store_id") or body.get("generation") != doc.get("generation"):
                raise ValueError("binding")
            entries = [_Entry.from_json(e) for e in body["keys"]]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise KeystoreError(f"keystore {p.name}: authenticated contents are not understood") from None
        return derived[:32], entries

    # ------------------------------------------------------------------------------------------- writing
    @contextmanager
    def _locked(self, expect_generation: int | None) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise KeystoreError(f"cannot lock keystore {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if expect_generation is not None:
                current = self._read(self.path).get("generation")
                if current != expect_generation:
                    raise KeystoreError(f"keystore {self.path.name} was changed by another process since it was "
                                        "opened; open it again")
            yield
        finally:
            os.close(fd)

    def _write(self, entries: list[_Entry]) -> None:
        if self._enc_key is None:
            raise KeystoreError(f"keystore {self.path.name} is closed")
        header = dict(self._header)
        header["generation"] = int(header["generation"]) + 1
        nonce = secrets.token_bytes(_NONCE_LEN)
        body = _canonical({"store_id": header["store_id"], "generation": header["generation"],
                           "keys": [e.to_json() for e in entries]})
        doc = {**header, "nonce": _b64(nonce)}
        doc["payload"] = _b64(AESGCM(self._enc_key).encrypt(nonce, body, _canonical(doc)))
        try:
            write_private(self.path, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")
        except OSError as exc:
            raise KeystoreError(f"cannot write keystore {self.path}: {exc.strerror}") from None
        self._header, self._entries = header, entries

    def _mutate(self, entries: list[_Entry]) -> None:
        with self._locked(expect_generation=int(self._header["generation"])):
            self._write(entries)

    # ------------------------------------------------------------------------------------------ lookups
    @property
    def label(self) -> str:
        return f"store:{self.path}"

    @property
    def generation(self) -> int:
        return int(self._header["generation"])

    def _find(self, name: str, alg: str | None) -> _Entry:
        base, version = split_version(name)
        found = [e for e in self._entries if e.name == base and (alg is None or e.alg == alg)]
        if alg is None and len({e.alg for e in found}) > 1:
            raise KeystoreError(f"key {base!r} exists for several algorithms in {self.path.name}; name one")
        if version is not None:
            found = [e for e in found if e.version == version]
        if not found:
            what = f"{base!r}" + (f" ({alg})" if alg else "") + (f" version {version}" if version else "")
            raise KeystoreError(f"key {what} not found in keystore {self.path.name}")
        return max(found, key=lambda e: e.version)

    def _secret(self, name: str, alg: Alg, *, purpose: str) -> _Entry:
        entry = self._find(name, alg.value)
        if purpose != "wrap" and entry.usage == Usage.KEK.value:
            raise KeystoreError(f"key {entry.name!r} is a key-encryption key: it only wraps and unwraps keys")
        return entry

    def key(self, name: str, alg: Alg) -> KeyMaterial:
        entry = self._secret(name, alg, purpose="value")
        if not entry.extractable:
            raise KeystoreError(f"key {entry.name!r} ({alg.value}) is not extractable: its value never leaves the "
                                "keystore (use derive, or a handle)")
        return KeyMaterial(entry.name, alg, entry.value)

    def derive(self, name: str, alg: Alg, levels: list[bytes]) -> KeyMaterial:
        entry = self._secret(name, alg, purpose="derive")
        if not levels and not entry.extractable:
            raise KeystoreError(f"key {entry.name!r}: deriving with no levels would give the master's value")
        try:
            return KeyMaterial(f"{entry.name}/derived", alg, chain(entry.value, alg, levels))
        except CryptoError as exc:
            raise KeystoreError(f"cannot derive from {entry.name!r}: {exc}") from None

    def entries(self) -> list[KeyInfo]:
        return [e.info() for e in sorted(self._entries, key=lambda e: (e.name, e.alg, e.version))]

    def info(self, name: str, alg: Alg | SignAlg | None = None) -> KeyInfo:
        return self._find(name, alg.value if alg else None).info()

    def handle(self, name: str, alg: Alg) -> KeyHandle:
        entry = self._secret(name, alg, purpose="handle")
        return SoftwareKeyHandle(entry.name, alg, entry.value)

    def derive_handle(self, name: str, alg: Alg, levels: Sequence[bytes]) -> KeyHandle:
        entry = self._secret(name, alg, purpose="derive")
        try:
            return SoftwareKeyHandle(f"{entry.name}/derived", alg, chain(entry.value, alg, list(levels)))
        except CryptoError as exc:
            raise KeystoreError(f"cannot derive from {entry.name!r}: {exc}") from None

    def signer(self, name: str) -> Signer:
        found = [e for e in self._entries if e.name == split_version(name)[0] and not e.symmetric]
        if not found:
            raise KeystoreError(f"signing key {name!r} not found in keystore {self.path.name}")
        entry = self._find(name, found[0].alg)
        return SoftwareSigner(entry.name, SignAlg(entry.alg), entry.value)

    def close(self) -> None:
        self._enc_key = None
        self._entries = []

    def __enter__(self) -> EncryptedKeystore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- ceremonies
    def _next_version(self, name: str, alg: str, rotate: bool) -> int:
        existing = [e.version for e in self._entries if e.name == name and e.alg == alg]
        if existing and not rotate:
            raise KeystoreError(f"key {name!r} ({alg}) already exists (version {max(existing)}); rotate to add "
                                f"version {max(existing) + 1}")
        return max(existing, default=0) + 1

    def _add(self, entry: _Entry) -> KeyInfo:
        self._mutate([*self._entries, entry])
        log.info("keystore %s: added %s %s v%d (KCV %s)", self.path.name, entry.name, entry.alg, entry.version,
                 entry.info().kcv)
        return entry.info()

    def generate(self, name: str, alg: Alg | SignAlg, *, bits: int | None = None, extractable: bool = False,
                 usage: Usage = Usage.MASTER, rotate: bool = False) -> KeyInfo:
        check_key_name(name)
        if isinstance(alg, SignAlg):
            if extractable:
                raise KeystoreError("signing keys are never extractable")
            version = self._next_version(name, alg.value, rotate)
            pkcs8 = generate_private_pkcs8(alg)
            fp = spki_fingerprint(SoftwareSigner(name, alg, pkcs8).public_key_der())
            bits_out = 256 if alg is SignAlg.ECDSA_P256 else int(alg.value.split("-")[1])
            return self._add(_Entry(name, alg.value, version, bits_out, "sign", False, "generated", _now(),
                                    {"spki-sha256": fp}, [], pkcs8))
        nbits = bits or (256 if usage is Usage.KEK else _DEFAULT_BITS[alg])
        if usage is Usage.KEK and alg is not Alg.AES:
            raise KeystoreError("a key-encryption key must be AES (RFC 3394/5649 key wrap)")
        value = secrets.token_bytes(nbits // 8) if nbits % 8 == 0 else b""
        if alg is Alg.DES3:
            value = adjust_des_parity(value)  # NIST SP 800-67 Rev. 2 §3.3.1: odd parity per byte
        try:
            check_key(alg, value)
        except CryptoError:
            raise KeystoreError(f"{alg.value} keys cannot have {nbits} bits") from None
        return self.import_key(name, alg, value, extractable=extractable, usage=usage, origin="generated",
                               rotate=rotate)

    def import_key(self, name: str, alg: Alg, value: bytes, *, extractable: bool = False,
                   usage: Usage = Usage.MASTER, origin: str = "imported", custodians: Sequence[str] = (),
                   rotate: bool = False) -> KeyInfo:
        check_key_name(name)
        try:
            check_key(alg, value)
        except CryptoError as exc:
            raise KeystoreError(f"cannot import {name!r}: {exc}") from None
        if usage is Usage.KEK and alg is not Alg.AES:
            raise KeystoreError("a key-encryption key must be AES (RFC 3394/5649 key wrap)")
        version = self._next_version(name, alg.value, rotate)
        return self._add(_Entry(name, alg.value, version, len(value) * 8, usage.value, extractable, origin, _now(),
                                all_kcvs(alg, bytes(value)), list(custodians), bytes(value)))

    def delete(self, name: str, alg: Alg | SignAlg | None = None) -> KeyInfo:
        entry = self._find(name, alg.value if alg else None)
        base, version = split_version(name)
        gone = [e for e in self._entries if e.name == base and e.alg == entry.alg
                and (version is None or e.version == version)]
        self._mutate([e for e in self._entries if e not in gone])
        log.info("keystore %s: deleted %s %s (%d version(s))", self.path.name, base, entry.alg, len(gone))
        return entry.info()

    def _kek(self, kek: str) -> _Entry:
        entry = self._find(kek, Alg.AES.value)
        if entry.usage != Usage.KEK.value:
            raise KeystoreError(f"key {entry.name!r} is not a key-encryption key (generate it with usage kek)")
        return entry

    def wrap(self, name: str, alg: Alg, kek: str, *, mechanism: str = "aes-kwp") -> WrappedKey:
        entry = self._secret(name, alg, purpose="wrap")
        if not entry.extractable:
            raise KeystoreError(f"key {entry.name!r} ({alg.value}) is not extractable: it cannot be wrapped")
        k = self._kek(kek)
        if mechanism == "aes-kw":
            wrapped = keywrap.aes_key_wrap(k.value, entry.value)
        elif mechanism == "aes-kwp":
            wrapped = keywrap.aes_key_wrap_with_padding(k.value, entry.value)
        else:
            raise KeystoreError(f"unknown wrapping mechanism {mechanism!r} (aes-kw = RFC 3394, aes-kwp = RFC 5649)")
        info = entry.info()
        return WrappedKey(entry.name, entry.alg, entry.version, info.kcv, info.kcv_method, k.name, k.info().kcv,
                          mechanism, wrapped, entry.usage)

    def unwrap(self, blob: WrappedKey, kek: str, *, name: str | None = None, extractable: bool = False,
               rotate: bool = False) -> KeyInfo:
        k = self._kek(kek)
        if k.info().kcv != blob.kek_kcv:
            raise KeystoreError(f"the key was wrapped under a KEK with KCV {blob.kek_kcv}; {k.name!r} has KCV "
                                f"{k.info().kcv}")
        try:
            if blob.mechanism == "aes-kw":
                value = keywrap.aes_key_unwrap(k.value, blob.wrapped)
            else:
                value = keywrap.aes_key_unwrap_with_padding(k.value, blob.wrapped)
        except (keywrap.InvalidUnwrap, ValueError):
            raise KeystoreError(f"the wrapped key does not unwrap under {k.name!r} (wrong KEK or damaged data)") \
                from None
        alg = alg_of(blob.alg)
        try:
            got = kcv(value, KcvMethod(blob.kcv_method)).hex().upper()
        except (ValueError, CryptoError):
            raise KeystoreError("the unwrapped key does not fit its stated algorithm or KCV method") from None
        if got != blob.kcv:
            raise KeystoreError(f"the unwrapped key's KCV {got} differs from the stated {blob.kcv}")
        return self.import_key(name or blob.name, alg, value, extractable=extractable, usage=Usage(blob.usage),
                               origin="unwrapped", rotate=rotate)

    def change_passphrase(self, new_passphrase: str, *, kdf: KdfParams | None = None,
                          allow_weak_kdf: bool = False) -> None:
        """Re-encrypt the store under a new passphrase (new salt, new keys)."""
        if len(new_passphrase) < 12 and not allow_weak_kdf:
            raise KeystoreError("the keystore passphrase must be at least 12 characters")
        params = kdf or KdfParams.default()
        params.check(allow_weak=allow_weak_kdf)
        salt = secrets.token_bytes(_SALT_LEN)
        derived = params.derive(new_passphrase, salt)
        old = (self._header, self._enc_key)
        with self._locked(expect_generation=self.generation):
            self._header = {**self._header, "kdf": {**params.to_dict(), "salt": _b64(salt)},
                            "check": _b64(hmac.new(derived[32:], _CHECK_TEXT, hashlib.sha256).digest()[:16])}
            self._enc_key = derived[:32]
            try:
                self._write(self._entries)
            except KeystoreError:
                self._header, self._enc_key = old
                raise

    def __repr__(self) -> str:
        return f"EncryptedKeystore({str(self.path)!r}, keys={len(self._entries)})"
