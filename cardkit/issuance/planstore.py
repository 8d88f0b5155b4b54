"""Stored personalization plans: prepare a whole batch now, personalize the cards later.

A plan file holds the :class:`~cardkit.issuance.prepare.PreparedRecord` of every record of a source file for one
profile: the encoded files, initial PINs and record keys. What depends on the card (serial-diversified keys, the
card identification code) is still computed at card time by :mod:`cardkit.issuance.engine`.

File format (UTF-8 JSON Lines, one header line then one line per record)::

    {"format": "cardkit-plan", "format_version": 1, "plan_id": "<32 hex>", "created": "2025-…Z",
     "cardkit": "0.1.0", "profile": {"name": "ssc", "algorithm": "sm4", "sha256": "<of profile.toml>"},
     "source": {"name": "people.csv", "sha256": "<of the source file>"}, "records": 300,
     "records_sha256": "<of the record lines>", "cipher": "aes-256-gcm", "data_key": {…}, "seal": "<b64>"}
    {"plan": "<plan_id>", "seq": 1, "ct": "<b64: AES-256-GCM ciphertext ‖ 16-byte tag>"}

* Every record's content (field values, PINs, record keys, card-time fields, the source line) is one AES-256-GCM
  message (NIST SP 800-38D) under a random 256-bit *data key* made for this plan alone. Its associated data is
  the plan id and the record's sequence number, so a record that is edited, moved to another position or taken
  from another plan fails authentication. The plaintext is padded to a multiple of 256 bytes (values' lengths
  do not show).
* Nonces follow the deterministic construction of SP 800-38D §8.2.1: fixed field ``plan`` ‖ 64-bit counter
  (0: the header seal, n: record n). The data key is never reused across plans, so no (key, nonce) pair repeats.
* The header, with the counts, the digests and the wrapped data key, is authenticated by ``seal``: the GCM tag
  over an empty plaintext whose associated data is the header without ``seal`` as canonical JSON (sorted keys,
  no spaces, UTF-8). ``records`` and ``records_sha256`` (SHA-256, FIPS 180-4, over the record lines as written)
  catch removed, added or duplicated lines.
* The data key is protected either by a key-encryption key in a keystore — AES key wrap (RFC 3394) in the
  encrypted store or inside a PKCS#11 token (``CKM_AES_KEY_WRAP``), the KEK named with its version and KCV in
  the header — or by a passphrase: scrypt (RFC 7914; N=2^17, r=8, p=1, 16-byte salt) gives 64 bytes, the first
  32 wrap the data key (RFC 3394), the last 32 key an HMAC-SHA-256 (RFC 2104) over a fixed text whose first 16
  bytes are ``check``, which tells a wrong passphrase apart from a tampered file.
* Loading refuses a plan prepared for another profile, algorithm or version of the profile file (SHA-256 of
  profile.toml), before any key is asked for.

Files are written to a temporary file created 0600 in the target directory, fsynced and linked into place
(never over an existing file). Writing streams: memory stays flat however many records a plan holds.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

from cardkit.errors import CardkitError, KeystoreError, ParseError, ProfileError, VerificationError
from cardkit.issuance.prepare import PreparedRecord
from cardkit.profiles.model import Profile

if TYPE_CHECKING:
    from cardkit.keys.store import KeyCustody, KeyInfo

__all__ = ["FORMAT", "PASSPHRASE_ENV", "KekProtection", "PassphraseProtection", "PlanError", "PlanFormatError",
           "PlanHeader", "PlanIntegrityError", "PlanKeyError", "PlanProfileError", "PlanProtection", "PlanReader",
           "ScryptParams", "check_profile", "profile_digest", "read_header", "write_plan"]

log = logging.getLogger(__name__)

FORMAT: Final = "cardkit-plan"
#: Environment variable holding the plan passphrase (never the command line).
PASSPHRASE_ENV: Final = "CARDKIT_PLAN_PASSPHRASE"  # noqa: S105 - the NAME of the variable
_CHECK_TEXT: Final = b"cardkit plan passphrase check v1"
_NONCE_FIXED: Final = b"plan"  # SP 800-38D §8.2.1: 32-bit fixed field ‖ 64-bit invocation counter
_PAD: Final = 256
_MAX_HEADER: Final = 1 << 16
_MAX_LINE: Final = 1 << 26  # 64 MiB: far above any record (a face image is tens of KiB)
_MIN_PASSPHRASE: Final = 12


# ------------------------------------------------------------------------------------------------ errors
class PlanError(CardkitError):
    """A plan file cannot be written or used."""


class PlanFormatError(PlanError, ParseError):
    """Not a plan file, or a line that is not what the format says (exit code 6)."""


class PlanIntegrityError(PlanError, VerificationError):
    """The plan does not authenticate: header or record changed, records moved, removed, added or taken from
    another plan (exit code 8)."""


class PlanKeyError(PlanError, KeystoreError):
    """The data key cannot be had: wrong passphrase, another KEK, no passphrase given (exit code 7)."""


class PlanProfileError(PlanError, ProfileError):
    """The plan was prepared for another profile, algorithm or version of the profile file (exit code 6)."""


# ------------------------------------------------------------------------------------------------ helpers
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise PlanFormatError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PlanFormatError(f"{what} is not valid base64") from None


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _nonce(counter: int) -> bytes:
    return _NONCE_FIXED + counter.to_bytes(8, "big")


def _aad(plan_id: str, seq: int) -> bytes:
    return b"cardkit-plan/1 record\x00" + plan_id.encode("ascii") + b"\x00" + seq.to_bytes(8, "big")


def _gcm(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def profile_digest(profile: Profile) -> str:
    """SHA-256 of the profile file the profile was loaded from (what a plan is bound to)."""
    if not profile.source:
        raise PlanProfileError(f"profile {profile.name!r} was not loaded from a file: a plan needs its digest")
    try:
        return hashlib.sha256(Path(profile.source).read_bytes()).hexdigest()
    except OSError as exc:
        raise PlanProfileError(f"cannot read profile file {profile.source}: {exc.strerror}") from None


# ------------------------------------------------------------------------------------------------ protection
class PlanProtection(Protocol):
    """How a plan's data key is protected: ``seal`` gives the header's ``data_key`` object for a new data key;
    ``open`` gives the data key back from that object (raising :class:`PlanKeyError` / :class:`PlanIntegrityError`)."""

    def seal(self, data_key: bytes) -> dict[str, Any]: ...

    def open(self, block: Mapping[str, Any]) -> bytes: ...


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost (RFC 7914). Default N=2^17, r=8, p=1 (128 MiB, OWASP 2023 minimum)."""

    n: int = 1 << 17
    r: int = 8
    p: int = 1

    @classmethod
    def weak_for_tests(cls) -> ScryptParams:
        """Cheap parameters for tests only (refused unless ``allow_weak=True``)."""
        return cls(n=1 << 10, r=8, p=1)

    def check(self, *, allow_weak: bool) -> None:
        ok = (1 << 10) <= self.n <= (1 << 20) and self.n & (self.n - 1) == 0 and 1 <= self.r <= 32 and \
            1 <= self.p <= 16 and 128 * self.n * self.r * self.p <= 1 << 30  # RFC 7914 §2: 128·r·N bytes
        if not ok:
            raise PlanFormatError(f"plan header: scrypt parameters out of bounds (N={self.n}, r={self.r}, p={self.p})")
        if self.n < (1 << 15) and not allow_weak:
            raise PlanKeyError(f"scrypt N={self.n} is too weak for a plan (at least 2^15)")


class PassphraseProtection:
    """The data key wrapped (RFC 3394) under a key derived from a passphrase with scrypt (see module doc)."""

    def __init__(self, passphrase: str, *, params: ScryptParams | None = None, allow_weak: bool = False) -> None:
        if not passphrase:
            raise PlanKeyError("the plan passphrase is empty")
        self._secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
        self.params = params or ScryptParams()
        self.allow_weak = allow_weak
        self._new_ok = len(passphrase) >= _MIN_PASSPHRASE or allow_weak

    def _derive(self, params: ScryptParams, salt: bytes) -> tuple[bytes, bytes]:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        out = Scrypt(salt=salt, length=64, n=params.n, r=params.r, p=params.p).derive(self._secret)
        return out[:32], hmac.new(out[32:], _CHECK_TEXT, hashlib.sha256).digest()[:16]

    def seal(self, data_key: bytes) -> dict[str, Any]:
        from cryptography.hazmat.primitives import keywrap

        if not self._new_ok:
            raise PlanKeyError(f"a plan passphrase must have at least {_MIN_PASSPHRASE} characters")
        self.params.check(allow_weak=self.allow_weak)
        salt = secrets.token_bytes(16)
        kek, check = self._derive(self.params, salt)
        return {"protection": "passphrase", "kdf": {"name": "scrypt", "n": self.params.n, "r": self.params.r,
                                                    "p": self.params.p, "salt": _b64(salt)},
                "check": _b64(check), "mechanism": "aes-kw", "wrapped": _b64(keywrap.aes_key_wrap(kek, data_key))}

    def open(self, block: Mapping[str, Any]) -> bytes:
        from cryptography.hazmat.primitives import keywrap

        if block.get("protection") != "passphrase":
            raise PlanKeyError(f"this plan's data key is wrapped under KEK {block.get('kek')!r} in a keystore, not "
                               "protected by a passphrase: give the keystore (--keys / --kek)")
        kdf = block.get("kdf")
        if not isinstance(kdf, Mapping) or kdf.get("name") != "scrypt" or not all(
                isinstance(kdf.get(k), int) and not isinstance(kdf.get(k), bool) for k in ("n", "r", "p")):
            raise PlanFormatError("plan header: the passphrase KDF is not scrypt with integer parameters")
        params = ScryptParams(kdf["n"], kdf["r"], kdf["p"])
        params.check(allow_weak=True)
        kek, check = self._derive(params, _unb64(kdf.get("salt"), "plan header: kdf salt"))
        if not hmac.compare_digest(check, _unb64(block.get("check"), "plan header: check")):
            raise PlanKeyError("wrong plan passphrase")
        try:
            return keywrap.aes_key_unwrap(kek, _unb64(block.get("wrapped"), "plan header: wrapped data key"))
        except (keywrap.InvalidUnwrap, ValueError):
            raise PlanIntegrityError("the plan's wrapped data key does not unwrap although the passphrase is "
                                     "right: the header was changed") from None


class KekProtection:
    """The data key wrapped (RFC 3394 ``aes-kw``) under a key-encryption key of a keystore: an encrypted store
    (``store:``) or a PKCS#11 token (the wrap runs in the token). ``kek`` may carry a version (``plan-kek@2``);
    opening without ``kek`` uses the KEK named in the plan."""

    def __init__(self, keystore: KeyCustody, kek: str | None = None) -> None:
        from cardkit.keys.store import TestKeyFile, split_version

        if isinstance(keystore, TestKeyFile):
            raise PlanKeyError("a TEST key file holds no key-encryption keys: wrap the plan's data key under a KEK "
                               "in an encrypted store or a PKCS#11 token, or use a passphrase")
        self.keystore, self.kek = keystore, kek
        if kek is not None:
            split_version(kek)

    def _info(self, ref: str) -> KeyInfo:
        from cardkit.crypto import Alg

        info = self.keystore.info(ref, Alg.AES)
        if info.usage != "kek":
            raise PlanKeyError(f"key {info.name!r} in {self.keystore.label} is not a key-encryption key (usage "
                               f"{info.usage}); generate one with 'cardkit keys generate NAME --alg aes --usage kek'")
        return info

    def seal(self, data_key: bytes) -> dict[str, Any]:
        if self.kek is None:
            raise PlanKeyError("no KEK named to wrap the plan's data key")
        info = self._info(self.kek)
        wrapped = _wrap(self.keystore, info.ref, data_key)
        return {"protection": "kek", "kek": info.ref, "kek_kcv": info.kcv, "kcv_method": info.kcv_method,
                "keystore": self.keystore.label, "mechanism": "aes-kw", "wrapped": _b64(wrapped)}

    def open(self, block: Mapping[str, Any]) -> bytes:
        if block.get("protection") != "kek":
            raise PlanKeyError("this plan's data key is protected by a passphrase, not a KEK: give the passphrase "
                               f"({PASSPHRASE_ENV} or the prompt)")
        ref = self.kek or block.get("kek")
        if not isinstance(ref, str):
            raise PlanFormatError("plan header: the KEK name is missing")
        info = self._info(ref)
        want = block.get("kek_kcv")
        if info.kcv != want or info.kcv_method != block.get("kcv_method"):
            raise PlanKeyError(f"the plan's data key was wrapped under a KEK with KCV {want} ({block.get('kek')}); "
                               f"{info.ref} in {self.keystore.label} has KCV {info.kcv}")
        return _wrap(self.keystore, info.ref, None, _unb64(block.get("wrapped"), "plan header: wrapped data key"))


def _wrap(store: object, ref: str, data_key: bytes | None, wrapped: bytes = b"") -> bytes:
    """AES key wrap (RFC 3394) of ``data_key`` under the KEK ``ref`` — or, with ``data_key=None``, unwrap.

    The keystores' public wrap/unwrap move keys *stored* in them; a plan's data key is not stored, so this uses
    the backends' KEK lookups (``_kek``) directly. In a PKCS#11 token (``CKM_AES_KEY_WRAP``, PKCS#11 v2.40
    §2.14) the data key exists only as a sensitive session object, destroyed at once.
    """
    from cryptography.hazmat.primitives import keywrap

    from cardkit.keys.encrypted import EncryptedKeystore
    from cardkit.keys.pkcs11 import Pkcs11Keystore

    bad = PlanIntegrityError(f"the plan's wrapped data key does not unwrap under {ref} although its KCV matches: "
                             "the header was changed")
    if isinstance(store, EncryptedKeystore):
        kek = store._kek(ref).value
        if data_key is not None:
            return keywrap.aes_key_wrap(kek, data_key)
        try:
            return keywrap.aes_key_unwrap(kek, wrapped)
        except (keywrap.InvalidUnwrap, ValueError):
            raise bad from None
    if not isinstance(store, Pkcs11Keystore):
        raise PlanKeyError(f"keystore {type(store).__name__} cannot wrap keys: keep the plan KEK in an encrypted "
                           "store (store:) or a PKCS#11 token")
    from cardkit.keys import pkcs11_base as base

    pk = base.p11()
    a, e = pk.Attribute, pk.exceptions
    template = {a.TOKEN: False, a.SENSITIVE: True, a.EXTRACTABLE: True, a.ENCRYPT: False, a.DECRYPT: False,
                a.WRAP: False, a.UNWRAP: False, a.SIGN: False, a.VERIFY: False, a.DERIVE: False}
    found, conn = store._kek(ref), store._c()
    with conn.lock, base.translate("wrapping/unwrapping the plan's data key", store.token_label):
        if data_key is not None:
            obj = conn.session.create_object({**template, a.CLASS: pk.ObjectClass.SECRET_KEY,
                                              a.KEY_TYPE: pk.KeyType.AES, a.VALUE: data_key})
        else:
            try:
                obj = found.obj.unwrap_key(pk.ObjectClass.SECRET_KEY, pk.KeyType.AES, wrapped, store=False,
                                           mechanism=pk.Mechanism.AES_KEY_WRAP, template=template)
            except (e.WrappedKeyInvalid, e.WrappedKeyLenRange, e.EncryptedDataInvalid, e.GeneralError) as exc:
                # SoftHSM2 2.6 answers CKR_GENERAL_ERROR when the RFC 3394 integrity check fails
                raise PlanIntegrityError(f"{bad} (the token answers {type(exc).__name__})") from None
        try:
            if data_key is not None:
                return bytes(found.obj.wrap_key(obj, mechanism=pk.Mechanism.AES_KEY_WRAP))
            return bytes(base.extract(conn.session, obj))
        finally:
            obj.destroy()


# ------------------------------------------------------------------------------------------------ header
@dataclass(frozen=True)
class PlanHeader:
    """What a plan says about itself (no personal data). Authenticated only once a :class:`PlanReader` opened it."""

    plan_id: str
    created: str
    cardkit: str
    profile: str
    algorithm: str
    profile_sha256: str
    source_name: str
    source_sha256: str
    records: int
    records_sha256: str
    protection: str
    kek: str | None
    kek_kcv: str | None
    keystore: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


def _parse_header(raw: bytes, name: str) -> PlanHeader:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PlanFormatError(f"{name} is not a cardkit plan (its first line is not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PlanFormatError(f"{name} is not a cardkit plan (format {FORMAT!r} expected)")
    if doc.get("format_version") != 1:
        raise PlanFormatError(f"{name}: plan format version {doc.get('format_version')!r} is not supported (1)")
    if doc.get("cipher") != "aes-256-gcm":
        raise PlanFormatError(f"{name}: unknown plan cipher {doc.get('cipher')!r}")
    try:
        prof, src, dk = doc["profile"], doc["source"], doc["data_key"]
        records = doc["records"]
        if not (isinstance(records, int) and not isinstance(records, bool) and records >= 0):
            raise TypeError("records")
        strings = [doc["plan_id"], doc["created"], doc["cardkit"], prof["name"], prof["algorithm"], prof["sha256"],
                   src["name"], src["sha256"], doc["records_sha256"], dk["protection"], doc["seal"]]
        if not all(isinstance(s, str) for s in strings) or not isinstance(dk, dict):
            raise TypeError("field type")
        if dk["protection"] not in ("kek", "passphrase") or len(doc["plan_id"]) != 32:
            raise ValueError("protection or plan id")
        int(doc["plan_id"], 16)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanFormatError(f"{name}: the plan header is incomplete or malformed ({type(exc).__name__}: "
                              f"{exc})") from None
    return PlanHeader(doc["plan_id"], doc["created"], doc["cardkit"], prof["name"], prof["algorithm"], prof["sha256"],
                      src["name"], src["sha256"], records, doc["records_sha256"], dk["protection"], dk.get("kek"),
                      dk.get("kek_kcv"), dk.get("keystore"), doc)


def read_header(path: str | os.PathLike[str]) -> PlanHeader:
    """The header of a plan, NOT authenticated (no key needed): for ``plan show`` and early checks."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            first = fh.readline(_MAX_HEADER)
    except OSError as exc:
        raise PlanError(f"cannot read plan {p.name}: {exc.strerror}") from None
    if not first.endswith(b"\n"):
        raise PlanFormatError(f"{p.name} is not a cardkit plan (no header line)")
    return _parse_header(first, p.name)


def check_profile(header: PlanHeader, profile: Profile) -> None:
    """Refuse a profile other than the one the plan was prepared for (name, algorithm, file digest)."""
    if profile.name != header.profile:
        raise PlanProfileError(f"the plan was prepared for profile {header.profile!r}, not {profile.name!r}")
    if profile.algorithm != header.algorithm:
        raise PlanProfileError(f"the plan was prepared with algorithm {header.algorithm}; the profile is loaded with "
                               f"{profile.algorithm} (give --algorithm {header.algorithm})")
    digest = profile_digest(profile)
    if digest != header.profile_sha256:
        raise PlanProfileError(f"the plan was prepared with another version of profile {profile.name!r} (profile "
                               f"file SHA-256 {header.profile_sha256[:16]}… then, {digest[:16]}… now): prepare the "
                               "plan again from its source file")


# ------------------------------------------------------------------------------------------------ records
def _encode(line: int, p: PreparedRecord) -> bytes:
    doc = {"line": line, "identity": p.identity,
           "records": {path: {str(n): _b64(v) for n, v in recs.items()} for path, recs in p.records.items()},
           "binaries": {k: _b64(v) for k, v in p.binaries.items()}, "pins": {k: _b64(v) for k, v in p.pins.items()},
           "card_fields": dict(p.card_fields), "record_keys": {k: _b64(v) for k, v in p.record_keys.items()}}
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return data + b" " * (-len(data) % _PAD)


def _decode(data: bytes, header: PlanHeader, seq: int) -> tuple[int, PreparedRecord]:
    what = f"record {seq}"
    try:
        doc = json.loads(data.decode("utf-8"))
        recs = {str(path): {int(n): _unb64(v, what) for n, v in dict(r).items()} for path, r in doc["records"].items()}
        out = PreparedRecord(header.profile, header.algorithm, str(doc["identity"]), recs,
                             {str(k): _unb64(v, what) for k, v in doc["binaries"].items()},
                             {str(k): _unb64(v, what) for k, v in doc["pins"].items()},
                             {str(k): str(v) for k, v in doc["card_fields"].items()},
                             {str(k): _unb64(v, what) for k, v in doc["record_keys"].items()})
        line = doc["line"]
        if not isinstance(line, int):
            raise TypeError("line")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise PlanFormatError(f"{what}: its authenticated content is not a prepared record") from None
    return line, out


# ------------------------------------------------------------------------------------------------ writing
def write_plan(path: str | os.PathLike[str], profile: Profile, records: Iterable[tuple[int, PreparedRecord]],
               protection: PlanProtection, *, source_name: str, source_sha256: str) -> PlanHeader:
    """Encrypt ``(source line, prepared record)`` pairs into a new plan file at ``path`` (see the module doc).

    The data key is wrapped first (a wrong KEK or passphrase fails before any record is prepared). Nothing is
    left behind if ``records`` raises; an existing ``path`` is never replaced.
    """
    from cardkit import __version__
    from cardkit.fsutil import fsync_dir

    out = Path(path)
    if out.exists():
        raise PlanError(f"{out} exists: a plan is never overwritten (remove it or choose another --out)")
    if not out.parent.is_dir():
        raise PlanError(f"directory {out.parent} does not exist")
    digest = profile_digest(profile)
    plan_id = uuid.uuid4().hex
    data_key = secrets.token_bytes(32)
    gcm = _gcm(data_key)
    block = protection.seal(data_key)
    temps: list[str] = []
    try:
        fd, body = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".body", dir=out.parent)  # mode 0600
        temps.append(body)
        count, lines = 0, hashlib.sha256()
        with os.fdopen(fd, "wb") as fh:
            for line, prepared in records:
                if (prepared.profile, prepared.algorithm) != (profile.name, profile.algorithm):
                    raise PlanError(f"line {line}: record prepared for {prepared.profile}/{prepared.algorithm}, not "
                                    f"{profile.name}/{profile.algorithm}")
                count += 1
                ct = gcm.encrypt(_nonce(count), _encode(line, prepared), _aad(plan_id, count))
                row = json.dumps({"plan": plan_id, "seq": count, "ct": _b64(ct)}, separators=(",", ":")).encode()
                row += b"\n"
                lines.update(row)
                fh.write(row)
        header: dict[str, Any] = {
            "format": FORMAT, "format_version": 1, "plan_id": plan_id, "cardkit": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "profile": {"name": profile.name, "algorithm": profile.algorithm, "sha256": digest},
            "source": {"name": source_name[:200], "sha256": source_sha256}, "records": count,
            "records_sha256": lines.hexdigest(), "cipher": "aes-256-gcm", "data_key": block}
        header["seal"] = _b64(gcm.encrypt(_nonce(0), b"", _canonical(header)))
        fd2, final = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        temps.append(final)
        with os.fdopen(fd2, "wb") as fh2, open(body, "rb") as src:
            fh2.write(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n")
            shutil.copyfileobj(src, fh2, 1 << 20)
            fh2.flush()
            os.fsync(fh2.fileno())
        try:
            os.link(final, out)  # atomic, and never over an existing file
        except FileExistsError:
            raise PlanError(f"{out} appeared while the plan was written; nothing was replaced") from None
        fsync_dir(out.parent)
    finally:
        for t in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(t)
    log.info("plan %s: %d records for %s/%s written to %s", plan_id, count, profile.name, profile.algorithm, out.name)
    return _parse_header(json.dumps(header).encode("utf-8"), out.name)


# ------------------------------------------------------------------------------------------------ reading
class PlanReader:
    """An opened, authenticated plan. ``open`` checks the profile (before asking for any key), unwraps the data
    key and checks the header seal; :meth:`records` authenticates every record as it streams, :meth:`verify`
    checks the whole file and indexes it for :meth:`get`."""

    def __init__(self, path: Path, header: PlanHeader, data_key: bytes, fh: IO[bytes], body: int) -> None:
        self.path, self.header = path, header
        self._gcm = _gcm(data_key)
        self._fh = fh
        self._body = body
        self._index: list[int] | None = None
        self._lock = threading.Lock()  # get() may be called from several reader threads

    @classmethod
    def open(cls, path: str | os.PathLike[str], protection: PlanProtection | None = None, *,
             profile: Profile | None = None,
             unlock: Callable[[PlanHeader], PlanProtection] | None = None) -> PlanReader:
        """Open ``path``. Give ``protection``, or ``unlock(header) -> PlanProtection`` to choose it once the
        header says how the data key is protected."""
        p = Path(path)
        header = read_header(p)
        if profile is not None:
            check_profile(header, profile)
        prot = protection if protection is not None else unlock(header) if unlock is not None else None
        if prot is None:
            raise PlanKeyError("no passphrase or keystore given to open the plan")
        from cryptography.exceptions import InvalidTag

        data_key = prot.open(header.raw["data_key"])
        if len(data_key) != 32:
            raise PlanIntegrityError(f"the data key of plan {p.name} is not an AES-256 key: the header was changed")
        body = {k: v for k, v in header.raw.items() if k != "seal"}
        try:
            _gcm(data_key).decrypt(_nonce(0), _unb64(header.raw["seal"], "plan header: seal"), _canonical(body))
        except InvalidTag:
            raise PlanIntegrityError(f"the header of plan {p.name} does not authenticate: it was changed after the "
                                     "plan was made") from None
        fh = open(p, "rb")  # closed by close()
        fh.readline(_MAX_HEADER)
        return cls(p, header, data_key, fh, fh.tell())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PlanReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, raw: bytes, seq: int) -> tuple[int, PreparedRecord]:
        from cryptography.exceptions import InvalidTag

        where = f"record {seq} (line {seq + 1} of {self.path.name})"
        if not raw.endswith(b"\n"):
            raise PlanIntegrityError(f"{where} is cut short: the plan file was truncated")
        try:
            doc = json.loads(raw)
            plan, number, ct = doc["plan"], doc["seq"], doc["ct"]
        except (ValueError, KeyError, TypeError):
            raise PlanFormatError(f"{where} is not a plan record line") from None
        if plan != self.header.plan_id:
            raise PlanIntegrityError(f"{where} belongs to another plan ({str(plan)[:32]}), not "
                                     f"{self.header.plan_id}: records were mixed between plans")
        if number != seq:
            raise PlanIntegrityError(f"{where} is numbered {number}: records were reordered, removed or inserted")
        try:
            data = self._gcm.decrypt(_nonce(seq), _unb64(ct, where), _aad(self.header.plan_id, seq))
        except InvalidTag:
            raise PlanIntegrityError(f"{where} does not authenticate: it was changed after the plan was made") \
                from None
        return _decode(data, self.header, seq)

    def records(self) -> Iterator[tuple[int, int, PreparedRecord]]:
        """``(seq, source line, prepared)`` of every record, each authenticated; at the end the count and the
        digest of all record lines are checked against the header (truncation, extra lines). One pass at a time."""
        self._fh.seek(self._body)
        digest, seq, index = hashlib.sha256(), 0, []
        while True:
            pos = self._fh.tell()
            raw = self._fh.readline(_MAX_LINE)
            if not raw:
                break
            seq += 1
            if seq > self.header.records:
                raise PlanIntegrityError(f"{self.path.name} holds more records than its header says "
                                         f"({self.header.records}): lines were added")
            digest.update(raw)
            index.append(pos)
            line, prepared = self._record(raw, seq)
            yield seq, line, prepared
        if seq != self.header.records:
            raise PlanIntegrityError(f"{self.path.name} holds {seq} records, its header says {self.header.records}: "
                                     "records were removed (or the file was cut short)")
        if digest.hexdigest() != self.header.records_sha256:
            raise PlanIntegrityError(f"the record lines of {self.path.name} do not match the digest in its header")
        self._index = index

    def verify(self) -> int:
        """Authenticate the whole plan (every record, count, digest) and index it; return the record count."""
        return sum(1 for _ in self.records())

    def get(self, seq: int) -> tuple[int, PreparedRecord]:
        """``(source line, prepared)`` of record ``seq`` (1-based), authenticated again. Needs :meth:`verify`."""
        if self._index is None:
            raise PlanError("verify() the plan before picking records from it")
        if not 1 <= seq <= len(self._index):
            raise PlanError(f"plan {self.header.plan_id} has no record {seq} (1..{len(self._index)})")
        with self._lock:
            self._fh.seek(self._index[seq - 1])
            raw = self._fh.readline(_MAX_LINE)
        return self._record(raw, seq)
