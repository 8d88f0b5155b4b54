"""Keys in an HSM through PKCS#11 (``pkcs11:token=LABEL``), with python-pkcs11.

What happens where (PKCS#11 v2.40 mechanism names; checked on SoftHSM2 2.6.1):

* **Master keys** are token objects with ``CKA_SENSITIVE=TRUE`` and ``CKA_EXTRACTABLE=FALSE`` (unless created
  ``extractable``, which still keeps them sensitive: they leave the token only wrapped). ``CKA_VALUE`` cannot
  be read and ``C_WrapKey`` refuses them, so neither cardkit nor any other PKCS#11 client gets the value.
* **Diversification** (:meth:`Pkcs11Keystore.derive`, the left/right-halves chain of
  :func:`cardkit.crypto.diversify.chain`): every level but the last runs in the token with ``C_DeriveKey``
  and ``CKM_DES3_ECB_ENCRYPT_DATA`` / ``CKM_AES_ECB_ENCRYPT_DATA`` (data = D ‖ ~D); the intermediate keys are
  sensitive, non-extractable session objects destroyed afterwards. The last level is ``C_Encrypt``
  (``CKM_DES3_ECB`` / ``CKM_AES_ECB``) of D ‖ ~D under the previous key, whose output *is* the card key: it
  reaches host memory because the card key must be sent to the card (cardkit's PUT KEY, inside the
  SM-protected channel — it exists in the host only there). ``C_Encrypt`` rather than ``C_DeriveKey`` +
  read-out for that step because SoftHSM2 forces odd DES parity on derived 3DES keys, which would change
  the stored card-key bytes (not the cryptography) compared with the other keystores.
* :meth:`Pkcs11Keystore.derive_handle` keeps the card key in the token (last level also ``C_DeriveKey``,
  sensitive, non-extractable); its handle encrypts (``CKM_*_ECB``/``CBC``) and MACs (``CKM_AES_CMAC`` /
  ``CKM_DES3_CMAC``) in the token.
* :meth:`Pkcs11Keystore.key` gives the value of an *extractable* key (e.g. a batch transport key the ISO
  engine must use in host memory): ``C_WrapKey`` (``CKM_AES_KEY_WRAP``, RFC 3394) under a one-time AES-256
  session key, unwrapped in the host. Non-extractable keys raise :class:`~cardkit.errors.KeystoreError`.
* **Wrap/unwrap** under a KEK: ``CKM_AES_KEY_WRAP`` (RFC 3394) or ``CKM_AES_KEY_WRAP_PAD`` (RFC 5649 in
  SoftHSM2); KEKs have ``CKA_WRAP``/``CKA_UNWRAP`` only (after their KCV is computed at generation,
  ``CKA_ENCRYPT`` is cleared — SoftHSM2 lets a logged-in user set it again; real HSM policies may not).
* **Key components** are combined in host memory (SoftHSM2 offers no ``CKM_XOR_BASE_AND_DATA``) and
  imported with ``C_CreateObject``; the combined value exists in the host only during the import.
* **Signing keys**: ``CKM_EC_KEY_PAIR_GEN`` (P-256) / ``CKM_RSA_PKCS_KEY_PAIR_GEN``; ``CKM_ECDSA`` over a
  host SHA-256 digest, ``CKM_SHA256_RSA_PKCS_PSS`` / ``CKM_SHA256_RSA_PKCS``.
* **SM4**: PKCS#11 defines no SM4 mechanism; tokens that offer it do so with vendor mechanisms cardkit does
  not know, and SoftHSM2 has none. SM4 keys are refused with a clear error.

Object layout: a secret key has ``CKA_LABEL`` = the key name and ``CKA_ID`` = ``ALG/vN``; a data object
(``CKA_APPLICATION`` = ``cardkit``, label ``NAME/ALG/vN``) holds its metadata (KCVs, origin, custodians).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cardkit.crypto import Alg, KcvMethod, check_key
from cardkit.crypto.kcv import default_kcv_method
from cardkit.errors import CryptoError, KeystoreError
from cardkit.keys import pkcs11_base as base
from cardkit.keys.pkcs11_base import Pkcs11KeyHandle, Pkcs11Signer, p11
from cardkit.keys.store import (
    KeyHandle,
    KeyInfo,
    KeyMaterial,
    SignAlg,
    Signer,
    Usage,
    WrappedKey,
    alg_of,
    all_kcvs,
    check_key_name,
    kcv_methods_for,
    split_version,
)

__all__ = ["Pkcs11Keystore"]

log = logging.getLogger(__name__)

_APP = "cardkit"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class _Found:
    obj: Any
    alg: str
    version: int
    meta: dict[str, Any] = field(default_factory=dict)
    meta_obj: Any = None
    usage: str = ""


class Pkcs11Keystore:
    """Keys in a PKCS#11 token. Implements :class:`~cardkit.keys.store.KeyAdmin`.

    ``module`` is the PKCS#11 library path, ``token`` the token label, ``pin`` the user PIN (from the
    environment or a prompt — see :func:`cardkit.keys.uri.open_keystore`). One logged-in session per
    (module, token) is shared by the keystores of a process.

    Thread safety: one instance may be shared by many threads (the batch runner's workers do). Every call
    into the PKCS#11 module holds the module's lock (:func:`cardkit.keys.pkcs11_base.module_lock`, one per
    module, not per token: python-pkcs11 initialises modules without locking callbacks, so the module itself
    is not thread-safe), and searches finish inside it; token operations of a process are therefore
    serialised (≈ 0.27 ms per SoftHSM2 derivation), host work around them is not. The lookup cache may be
    filled twice by two threads racing on a miss, which is harmless.
    """

    def __init__(self, module: str, token: str, pin: str) -> None:
        self.module, self.token_label = module, token
        self._conn: base.Connection | None = base.connect(module, token, pin)
        # (name[@version], alg) -> the key object, resolved once per keystore instance (a lookup costs ~1 ms in
        # SoftHSM2); cleared by every change this instance makes. Reopen to see rotations made elsewhere.
        self._cache: dict[tuple[str, str], _Found] = {}

    # ------------------------------------------------------------------------------------------ plumbing
    @property
    def label(self) -> str:
        return f"pkcs11:token={self.token_label}"

    def _c(self) -> base.Connection:
        if self._conn is None:
            raise KeystoreError(f"keystore {self.label} is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            base.release(self._conn)
            self._conn = None

    def __enter__(self) -> Pkcs11Keystore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pkcs11Keystore(token={self.token_label!r})"

    def _meta_objects(self, name: str | None = None) -> list[tuple[Any, dict[str, Any]]]:
        c = self._c()
        attrs: dict[Any, Any] = {p11().Attribute.CLASS: p11().ObjectClass.DATA, p11().Attribute.APPLICATION: _APP}
        out = []
        for obj in base.find_objects(c.session, attrs):
            try:
                meta = json.loads(bytes(obj[p11().Attribute.VALUE]).decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                log.warning("token %s: unreadable cardkit metadata object skipped", self.token_label)
                continue
            if isinstance(meta, dict) and (name is None or meta.get("name") == name):
                out.append((obj, meta))
        return out

    def _find(self, name: str, alg: str | None, *, klass: str = "secret", meta: bool = True) -> _Found:
        """The newest (or the named) version of a key; ``klass`` secret, private or public."""
        key_name, version = split_version(name)
        pk = p11()
        with self._c().lock:
            metas = {(m.get("alg"), m.get("version")): (o, m) for o, m in self._meta_objects(key_name)} if meta \
                else {}
            oc = {"secret": pk.ObjectClass.SECRET_KEY, "private": pk.ObjectClass.PRIVATE_KEY,
                  "public": pk.ObjectClass.PUBLIC_KEY}[klass]
            found: list[_Found] = []
            for obj in base.find_objects(self._c().session, {pk.Attribute.CLASS: oc, pk.Attribute.LABEL: key_name}):
                key_alg, key_version = base.parse_id(obj, klass)
                if key_alg is None or (alg is not None and key_alg != alg):
                    continue
                if version is not None and key_version != version:
                    continue
                mo, md = metas.get((key_alg, key_version), (None, {}))
                found.append(_Found(obj, key_alg, key_version, md, mo))
        if not found:
            what = f"{key_name!r}" + (f" ({alg})" if alg else "") + (f" version {version}" if version else "")
            raise KeystoreError(f"key {what} not found in token {self.token_label!r}")
        if alg is None and len({f.alg for f in found}) > 1:
            raise KeystoreError(f"key {key_name!r} exists for several algorithms in token {self.token_label!r}; "
                                "name one")
        return max(found, key=lambda f: f.version)

    def _secret(self, name: str, alg: Alg) -> _Found:
        """A key for use (cached); its usage comes from the token's attributes, not from metadata."""
        base.check_alg(alg, self.token_label)
        f = self._cache.get((name, alg.value))
        if f is None:
            f = self._find(name, alg.value, meta=False)
            a = p11().Attribute
            with self._c().lock, base.translate(f"reading the attributes of {name!r}", self.token_label):
                f.usage = Usage.KEK.value if f.obj[a.WRAP] and not f.obj[a.DERIVE] else Usage.MASTER.value
            self._cache[(name, alg.value)] = f
        if f.usage == Usage.KEK.value:
            raise KeystoreError(f"key {split_version(name)[0]!r} is a key-encryption key: it only wraps and "
                                "unwraps keys")
        return f

    # ------------------------------------------------------------------------------------------ Keystore
    def _forget(self, name: str, alg: Alg) -> None:
        """Drop a cached lookup after a failed use (the object may have been deleted by another process)."""
        self._cache.pop((name, alg.value), None)

    def key(self, name: str, alg: Alg) -> KeyMaterial:
        try:
            return self._key(name, alg)
        except KeystoreError:
            self._forget(name, alg)
            raise

    def _key(self, name: str, alg: Alg) -> KeyMaterial:
        f = self._secret(name, alg)
        key_name = split_version(name)[0]
        with self._c().lock, base.translate(f"reading key {key_name!r}", self.token_label):
            if not f.obj[p11().Attribute.EXTRACTABLE]:
                raise KeystoreError(f"key {key_name!r} ({alg.value}) is not extractable: its value never leaves "
                                    f"token {self.token_label!r} (use derive, or a handle)")
            value = base.extract(self._c().session, f.obj)
        return KeyMaterial(key_name, alg, value)

    def derive(self, name: str, alg: Alg, levels: list[bytes]) -> KeyMaterial:
        if not levels:
            return self.key(name, alg)
        try:
            return self._derive(name, alg, levels)
        except KeystoreError:
            self._forget(name, alg)
            raise

    def _derive(self, name: str, alg: Alg, levels: list[bytes]) -> KeyMaterial:
        f = self._secret(name, alg)
        key_name = split_version(name)[0]
        data = [base.level_data(d, n) for n, d in enumerate(levels)]
        with self._c().lock, base.translate(f"deriving from {key_name!r}", self.token_label):
            temps: list[Any] = []
            try:
                key = f.obj
                for d in data[:-1]:
                    key = base.derive_in_token(key, alg, d, final=False)
                    temps.append(key)
                value = bytes(key.encrypt(data[-1], mechanism=base.ecb_mechanism(alg)))
            finally:
                for t in temps:
                    t.destroy()
        return KeyMaterial(f"{key_name}/derived", alg, value)

    # ---------------------------------------------------------------------------------------- KeyCustody
    def entries(self) -> list[KeyInfo]:
        with self._c().lock, base.translate("listing keys", self.token_label):
            metas = self._meta_objects()
        out = [base.info_from_meta(m) for _, m in metas]
        return sorted(out, key=lambda i: (i.name, i.alg, i.version))

    def info(self, name: str, alg: Alg | SignAlg | None = None) -> KeyInfo:
        if isinstance(alg, SignAlg):
            f = self._find(name, alg.value, klass="private")
        elif alg is None:
            try:
                f = self._find(name, None)
            except KeystoreError:
                f = self._find(name, None, klass="private")
        else:
            f = self._find(name, alg.value)
        if not f.meta:
            raise KeystoreError(f"key {split_version(name)[0]!r} in token {self.token_label!r} was not created by "
                                "cardkit (no metadata object)")
        return base.info_from_meta(f.meta)

    def handle(self, name: str, alg: Alg) -> KeyHandle:
        f = self._secret(name, alg)
        return Pkcs11KeyHandle(self._c(), f.obj, split_version(name)[0], alg, temporary=False)

    def derive_handle(self, name: str, alg: Alg, levels: Sequence[bytes]) -> KeyHandle:
        f = self._secret(name, alg)
        key_name = split_version(name)[0]
        data = [base.level_data(d, n) for n, d in enumerate(levels)]
        if not data:
            return Pkcs11KeyHandle(self._c(), f.obj, key_name, alg, temporary=False)
        with self._c().lock, base.translate(f"deriving from {key_name!r}", self.token_label):
            key = f.obj
            for n, d in enumerate(data):
                nxt = base.derive_in_token(key, alg, d, final=n == len(data) - 1)
                if key is not f.obj:
                    key.destroy()
                key = nxt
        return Pkcs11KeyHandle(self._c(), key, f"{key_name}/derived", alg, temporary=True)

    def signer(self, name: str) -> Signer:
        f = self._find(name, None, klass="private")
        pub = self._find(f"{split_version(name)[0]}@{f.version}", f.alg, klass="public")
        return Pkcs11Signer(self._c(), f.obj, pub.obj, split_version(name)[0], SignAlg(f.alg))

    # ---------------------------------------------------------------------------------------- ceremonies
    def _next_version(self, name: str, alg: str, rotate: bool) -> int:
        klass = "secret" if alg in ("aes", "3des", "sm4") else "private"
        try:
            latest = self._find(name, alg, klass=klass).version
        except KeystoreError:
            return 1
        if not rotate:
            raise KeystoreError(f"key {name!r} ({alg}) already exists (version {latest}); rotate to add version "
                                f"{latest + 1}")
        return latest + 1

    def _store_meta(self, meta: dict[str, Any]) -> KeyInfo:
        self._cache.clear()
        pk = p11()
        self._c().session.create_object({
            pk.Attribute.CLASS: pk.ObjectClass.DATA, pk.Attribute.TOKEN: True, pk.Attribute.PRIVATE: True,
            pk.Attribute.APPLICATION: _APP, pk.Attribute.LABEL: f"{meta['name']}/{meta['alg']}/v{meta['version']}",
            pk.Attribute.VALUE: json.dumps(meta, sort_keys=True).encode()})
        info = base.info_from_meta(meta)
        log.info("token %s: added %s %s v%d (KCV %s)", self.token_label, info.name, info.alg, info.version, info.kcv)
        return info

    def _meta(self, name: str, alg: str, version: int, bits: int, usage: str, extractable: bool, origin: str,
              kcvs: dict[str, str], custodians: Sequence[str] = ()) -> dict[str, Any]:
        return {"name": name, "alg": alg, "version": version, "bits": bits, "usage": usage,
                "extractable": extractable, "origin": origin, "created": _now(), "kcvs": kcvs,
                "custodians": list(custodians)}

    def generate(self, name: str, alg: Alg | SignAlg, *, bits: int | None = None, extractable: bool = False,
                 usage: Usage = Usage.MASTER, rotate: bool = False) -> KeyInfo:
        check_key_name(name)
        if isinstance(alg, SignAlg):
            if extractable:
                raise KeystoreError("signing keys are never extractable")
            with self._c().lock, base.translate(f"generating {name!r}", self.token_label):
                version = self._next_version(name, alg.value, rotate)
                fp, nbits = base.generate_keypair(self._c().session, name, alg, version)
                return self._store_meta(self._meta(name, alg.value, version, nbits, "sign", False, "generated",
                                                   {"spki-sha256": fp}))
        base.check_alg(alg, self.token_label)
        if usage is Usage.KEK and alg is not Alg.AES:
            raise KeystoreError("a key-encryption key must be AES (RFC 3394/5649 key wrap)")
        nbits = bits or (256 if usage is Usage.KEK else 128)
        try:
            check_key(alg, bytes(nbits // 8))
        except CryptoError:
            raise KeystoreError(f"{alg.value} keys cannot have {nbits} bits") from None
        with self._c().lock, base.translate(f"generating {name!r}", self.token_label):
            version = self._next_version(name, alg.value, rotate)
            obj = base.generate_secret(self._c().session, name, alg, nbits, version, usage, extractable)
            try:
                kcvs = base.token_kcvs(obj, alg)
                if usage is Usage.KEK:
                    obj[p11().Attribute.ENCRYPT] = False
                    obj[p11().Attribute.SIGN] = False
                return self._store_meta(self._meta(name, alg.value, version, nbits, usage.value, extractable,
                                                   "generated", kcvs))
            except BaseException:
                obj.destroy()
                raise

    def import_key(self, name: str, alg: Alg, value: bytes, *, extractable: bool = False,
                   usage: Usage = Usage.MASTER, origin: str = "imported", custodians: Sequence[str] = (),
                   rotate: bool = False) -> KeyInfo:
        check_key_name(name)
        base.check_alg(alg, self.token_label)
        try:
            check_key(alg, value)
        except CryptoError as exc:
            raise KeystoreError(f"cannot import {name!r}: {exc}") from None
        if usage is Usage.KEK and alg is not Alg.AES:
            raise KeystoreError("a key-encryption key must be AES (RFC 3394/5649 key wrap)")
        with self._c().lock, base.translate(f"importing {name!r}", self.token_label):
            version = self._next_version(name, alg.value, rotate)
            obj = base.create_secret(self._c().session, name, alg, bytes(value), version, usage, extractable)
            try:
                return self._store_meta(self._meta(name, alg.value, version, len(value) * 8, usage.value,
                                                   extractable, origin, all_kcvs(alg, bytes(value)), custodians))
            except BaseException:
                obj.destroy()
                raise

    def delete(self, name: str, alg: Alg | SignAlg | None = None) -> KeyInfo:
        key_name, version = split_version(name)
        try:
            info = self.info(name, alg)
        except KeystoreError:
            info = None
        klass = "private" if isinstance(alg, SignAlg) or (info is not None and info.usage == "sign") else "secret"
        f = self._find(name, alg.value if alg else None, klass=klass)
        pk = p11()
        self._cache.clear()
        with self._c().lock, base.translate(f"deleting {key_name!r}", self.token_label):
            classes = [pk.ObjectClass.SECRET_KEY] if klass == "secret" else [pk.ObjectClass.PRIVATE_KEY,
                                                                             pk.ObjectClass.PUBLIC_KEY]
            count = 0
            for oc in classes:
                for obj in base.find_objects(self._c().session, {pk.Attribute.CLASS: oc, pk.Attribute.LABEL: key_name}):
                    a, v = base.parse_id(obj, "secret" if oc == pk.ObjectClass.SECRET_KEY else "private")
                    if a == f.alg and (version is None or v == version):
                        obj.destroy()
                        count += 1
            for mo, meta in self._meta_objects(key_name):
                if meta.get("alg") == f.alg and (version is None or meta.get("version") == version):
                    mo.destroy()
        log.info("token %s: deleted %s %s (%d object(s))", self.token_label, key_name, f.alg, count)
        return info or KeyInfo(key_name, f.alg, f.version, 0, "", "", "", False, "foreign")

    def _kek(self, kek: str) -> _Found:
        f = self._find(kek, Alg.AES.value)
        if f.meta.get("usage") != Usage.KEK.value:
            raise KeystoreError(f"key {split_version(kek)[0]!r} is not a key-encryption key (generate it with "
                                "usage kek)")
        return f

    def wrap(self, name: str, alg: Alg, kek: str, *, mechanism: str = "aes-kwp") -> WrappedKey:
        base.check_alg(alg, self.token_label)
        f = self._find(name, alg.value)
        k = self._kek(kek)
        key_name = split_version(name)[0]
        with self._c().lock, base.translate(f"wrapping {key_name!r}", self.token_label):
            if not f.obj[p11().Attribute.EXTRACTABLE]:
                raise KeystoreError(f"key {key_name!r} ({alg.value}) is not extractable: it cannot be wrapped")
            wrapped = bytes(k.obj.wrap_key(f.obj, mechanism=base.wrap_mechanism(mechanism)))
        info = base.info_from_meta(f.meta) if f.meta else None
        method = default_kcv_method(alg).value
        kcv_text = info.kcv if info else Pkcs11KeyHandle(self._c(), f.obj, key_name, alg, temporary=False).kcv()
        return WrappedKey(key_name, alg.value, f.version, kcv_text, method, split_version(kek)[0],
                          base.info_from_meta(k.meta).kcv, mechanism, wrapped, str(f.meta.get("usage", "master")))

    def unwrap(self, blob: WrappedKey, kek: str, *, name: str | None = None, extractable: bool = False,
               rotate: bool = False) -> KeyInfo:
        k = self._kek(kek)
        kek_info = base.info_from_meta(k.meta)
        if kek_info.kcv != blob.kek_kcv:
            raise KeystoreError(f"the key was wrapped under a KEK with KCV {blob.kek_kcv}; {kek_info.name!r} has "
                                f"KCV {kek_info.kcv}")
        alg = alg_of(blob.alg)
        base.check_alg(alg, self.token_label)
        new_name = check_key_name(name or blob.name)
        usage = Usage(blob.usage)
        with self._c().lock, base.translate(f"unwrapping {new_name!r}", self.token_label):
            version = self._next_version(new_name, alg.value, rotate)
            obj = base.unwrap_secret(self._c().session, k.obj, blob, new_name, alg, version, usage, extractable)
            try:
                kcvs = base.token_kcvs(obj, alg)
                method = KcvMethod(blob.kcv_method)
                if method not in kcv_methods_for(alg) or kcvs[method.value] != blob.kcv:
                    raise KeystoreError(f"the unwrapped key's KCV {kcvs.get(method.value, '?')} differs from the "
                                        f"stated {blob.kcv}")
                if usage is Usage.KEK:
                    obj[p11().Attribute.ENCRYPT] = False
                    obj[p11().Attribute.SIGN] = False
                nbits = (len(blob.wrapped) - 8) * 8  # RFC 3394/5649: one 64-bit block more than the key
                return self._store_meta(self._meta(new_name, alg.value, version, nbits, usage.value, extractable,
                                                   "unwrapped", kcvs))
            except BaseException:
                obj.destroy()
                raise
