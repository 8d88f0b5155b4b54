"""PKCS#11 plumbing for :mod:`cardkit.keys.pkcs11`: module loading, the shared logged-in session, error
translation, object templates, in-token derivation, and the handle and signer classes.

python-pkcs11 is imported lazily (``pip install cardkit[hsm]``); its exceptions never leave this package.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import logging
import secrets
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives import keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cardkit.crypto import Alg, KcvMethod, block_size
from cardkit.crypto.kcv import default_kcv_method
from cardkit.errors import KeystoreError
from cardkit.keys.software import PSS_SALT_LENGTH, der_from_raw_ecdsa, pem_from_der, spki_fingerprint
from cardkit.keys.store import KeyInfo, SignAlg, Usage, WrappedKey, kcv_methods_for

__all__ = ["Connection", "Pkcs11KeyHandle", "Pkcs11Signer", "check_alg", "connect", "find_objects", "module_lock",
           "p11", "release", "translate"]

log = logging.getLogger(__name__)

# RFC 5480 §2.1.1.1: namedCurve secp256r1 = 1.2.840.10045.3.1.7, DER-encoded as CKA_EC_PARAMS.
P256_PARAMS = bytes.fromhex("06082A8648CE3D030107")
# KCV input blocks (GPCS 2.3.1 §11.8.2.3; Amendment D §7.2.2; ANSI X9.24-1:2017 Annex A) and lengths.
_KCV_INPUT = {KcvMethod.DES3_ZEROS: (bytes(8), 3), KcvMethod.AES_GP: (b"\x01" * 16, 3),
              KcvMethod.AES_CMAC: (bytes(16), 5)}
_RSA_E = b"\x01\x00\x01"  # 65537


def p11() -> ModuleType:
    """The python-pkcs11 package, imported on first use."""
    try:
        import pkcs11
    except ImportError:
        raise KeystoreError("PKCS#11 keystores need python-pkcs11 (pip install 'cardkit[hsm]')") from None
    return pkcs11


# ---------------------------------------------------------------------------------------- connections


@dataclass
class Connection:
    """One logged-in read/write session on a token, shared in the process (PKCS#11 login state is per
    application and token, v2.40 §5.6). ``lock`` is the lock of the whole PKCS#11 module (see
    :func:`module_lock`): every call into the module, on any session of any of its tokens, holds it."""

    module: str
    token: str
    session: Any
    mechanisms: frozenset[int]
    pin_digest: bytes = field(repr=False)
    lock: threading.RLock = field(repr=False)
    refs: int = 1


# PKCS#11 modules are process-wide (C_Initialize once per process), so the loaded modules and the sessions
# opened on them are kept here rather than per keystore object.
_LIBS: dict[str, Any] = {}
_CONNECTIONS: dict[tuple[str, str], Connection] = {}
_MODULE_LOCKS: dict[str, threading.RLock] = {}
# Lock order: _REGISTRY_LOCK, then a module lock (never the other way round).
_REGISTRY_LOCK = threading.Lock()
_PIN_SALT = secrets.token_bytes(16)


def module_lock(module: str) -> threading.RLock:
    """The one lock serialising every call into the PKCS#11 module ``module``, whatever the token or session.

    python-pkcs11 (0.10) calls ``C_Initialize(NULL_PTR)``. Without ``CK_C_INITIALIZE_ARGS`` a module may
    assume that the application does not call it from several threads at once (PKCS#11 v2.40 base §5.4.1,
    §3.6), and SoftHSM2 then switches its own mutexes off: two threads working on two tokens of the same
    module at the same moment crash it (segmentation fault, measured with SoftHSM2 2.6.1). One lock per
    session would not be enough; one per module is what the specification asks of such an application.
    """
    with _REGISTRY_LOCK:
        return _MODULE_LOCKS.setdefault(module, threading.RLock())


def _load(module: str) -> Any:
    lib = _LIBS.get(module)
    if lib is None:
        pk = p11()
        try:
            lib = pk.lib(module)
        except pk.exceptions.PKCS11Error as exc:
            raise KeystoreError(f"cannot load PKCS#11 module {module}: {exc or type(exc).__name__}") from None
        _LIBS[module] = lib
    return lib


def connect(module: str, token: str, pin: str) -> Connection:
    """Log in to ``token`` (or join the process's existing session after checking the PIN matches)."""
    digest = hmac.new(_PIN_SALT, pin.encode("utf-8"), hashlib.sha256).digest()
    pk = p11()
    lock = module_lock(module)
    with _REGISTRY_LOCK, lock:
        conn = _CONNECTIONS.get((module, token))
        if conn is not None:
            if not hmac.compare_digest(conn.pin_digest, digest):
                raise KeystoreError(f"wrong PIN for token {token!r}")
            conn.refs += 1
            return conn
        lib = _load(module)
        try:
            tok = lib.get_token(token_label=token)
        except pk.exceptions.NoSuchToken:
            try:
                labels = sorted(t.label for t in lib.get_tokens() if t.label)
            except pk.exceptions.PKCS11Error:
                labels = []
            raise KeystoreError(f"no token labelled {token!r} in PKCS#11 module {module} (tokens: "
                                f"{', '.join(labels) or 'none'})") from None
        except pk.exceptions.MultipleTokensReturned:
            raise KeystoreError(f"several tokens are labelled {token!r}; give each a unique label") from None
        try:
            session = tok.open(rw=True, user_pin=pin)
        except pk.exceptions.PinIncorrect:
            raise KeystoreError(f"wrong PIN for token {token!r}") from None
        except pk.exceptions.PinLocked:
            raise KeystoreError(f"the user PIN of token {token!r} is locked (unblock it with the SO PIN)") from None
        except (pk.exceptions.PinLenRange, pk.exceptions.PinInvalid):
            raise KeystoreError(f"the PIN given for token {token!r} has an invalid length or characters") from None
        except pk.exceptions.UserPinNotInitialized:
            raise KeystoreError(f"token {token!r} has no user PIN yet (initialise it first)") from None
        except pk.exceptions.PKCS11Error as exc:
            raise KeystoreError(f"cannot log in to token {token!r}: {type(exc).__name__}") from None
        mechs = frozenset(int(m) for m in tok.slot.get_mechanisms())
        conn = Connection(module, token, session, mechs, digest, lock)
        _CONNECTIONS[(module, token)] = conn
        log.info("logged in to PKCS#11 token %s", token)
        return conn


def find_objects(session: Any, attrs: dict[Any, Any]) -> list[Any]:
    """Every object matching ``attrs``, the search finished (``C_FindObjectsFinal``) before returning.

    python-pkcs11's ``get_objects`` is a generator holding an open search; one left half-read (an exception
    in the caller's loop) would be finished by the garbage collector later, in any thread, outside the
    module lock. The caller holds the module lock.
    """
    return list(session.get_objects(attrs))


def release(conn: Connection) -> None:
    with _REGISTRY_LOCK:
        conn.refs -= 1
        if conn.refs <= 0 and _CONNECTIONS.get((conn.module, conn.token)) is conn:
            del _CONNECTIONS[(conn.module, conn.token)]
            with conn.lock:
                try:
                    conn.session.close()
                except p11().exceptions.PKCS11Error as exc:
                    log.warning("closing the session on token %s failed: %s", conn.token, type(exc).__name__)


_ERRORS = {
    "AttributeSensitive": "the key is sensitive: its value cannot be read",
    "KeyUnextractable": "the key is not extractable",
    "KeyFunctionNotPermitted": "the key's attributes do not permit this operation",
    "MechanismInvalid": "the token does not support the mechanism",
    "TokenNotPresent": "the token was removed",
    "DeviceRemoved": "the token was removed",
    "SessionClosed": "the session to the token was closed",
    "SessionHandleInvalid": "the session to the token is no longer valid",
    "UserNotLoggedIn": "not logged in to the token",
    "WrappedKeyInvalid": "the wrapped key is invalid (wrong KEK or damaged data)",
    "EncryptedDataInvalid": "the wrapped key is invalid (wrong KEK or damaged data)",
    "TemplateInconsistent": "the token refused the key attributes",
    "TokenWriteProtected": "the token is write-protected",
    "DeviceMemory": "the token is out of memory",
}


@contextmanager
def translate(context: str, token: str) -> Iterator[None]:
    """Turn python-pkcs11 exceptions into :class:`KeystoreError` naming the operation and the token."""
    pk = p11()
    try:
        yield
    except pk.exceptions.PKCS11Error as exc:
        name = type(exc).__name__
        text = _ERRORS.get(name, f"PKCS#11 error {name}")
        raise KeystoreError(f"token {token!r}: {context}: {text}") from None


def check_alg(alg: Alg, token: str) -> None:
    if alg is Alg.SM4:
        raise KeystoreError(f"token {token!r} cannot hold SM4 keys: PKCS#11 defines no SM4 mechanism and cardkit "
                            "knows no vendor one (SoftHSM2 has none); keep SM4 keys in an encrypted store "
                            "(store:PATH)")
    if not isinstance(alg, Alg):
        raise KeystoreError(f"unknown algorithm {alg!r}")


def need_mechanism(conn: Connection, mech: Any, what: str) -> None:
    if int(mech) not in conn.mechanisms:
        raise KeystoreError(f"token {conn.token!r} does not offer {mech.name} (needed for {what})")


# -------------------------------------------------------------------------------------------- objects


def key_id(alg: str, version: int) -> bytes:
    return f"{alg}/v{version}".encode("ascii")


def parse_id(obj: Any, klass: str) -> tuple[str | None, int]:
    """(algorithm, version) from CKA_ID ``ALG/vN``; keys made by other tools count as version 1 of the
    algorithm their key type gives."""
    pk = p11()
    try:
        raw = bytes(obj[pk.Attribute.ID])
        alg_text, _, ver = raw.decode("ascii").partition("/v")
        if alg_text and ver.isdigit():
            return alg_text, int(ver)
    except (pk.exceptions.PKCS11Error, UnicodeDecodeError):
        pass
    kt = obj.key_type
    if klass == "secret":
        return {pk.KeyType.AES: "aes", pk.KeyType.DES2: "3des", pk.KeyType.DES3: "3des"}.get(kt), 1
    if kt == pk.KeyType.EC:
        return SignAlg.ECDSA_P256.value, 1
    if kt == pk.KeyType.RSA:
        return f"rsa-{int(obj[pk.Attribute.MODULUS_BITS])}" if klass == "public" else None, 1
    return None, 1


def _key_type(alg: Alg, nbytes: int) -> Any:
    pk = p11()
    if alg is Alg.AES:
        return pk.KeyType.AES
    return pk.KeyType.DES2 if nbytes == 16 else pk.KeyType.DES3


def _template(usage: Usage, extractable: bool, *, token: bool = True) -> dict[Any, Any]:
    a = p11().Attribute
    master = usage is Usage.MASTER
    return {a.TOKEN: token, a.PRIVATE: True, a.SENSITIVE: True, a.EXTRACTABLE: extractable,
            a.DERIVE: master, a.ENCRYPT: True, a.DECRYPT: False, a.SIGN: True, a.VERIFY: False,
            a.WRAP: not master, a.UNWRAP: not master}


def create_secret(session: Any, name: str, alg: Alg, value: bytes, version: int, usage: Usage,
                  extractable: bool) -> Any:
    pk = p11()
    attrs = _template(usage, extractable)
    if usage is Usage.KEK:  # the KCVs were computed from the value in the host: no encrypt right needed
        attrs[pk.Attribute.ENCRYPT] = attrs[pk.Attribute.SIGN] = False
    attrs.update({pk.Attribute.CLASS: pk.ObjectClass.SECRET_KEY, pk.Attribute.KEY_TYPE: _key_type(alg, len(value)),
                  pk.Attribute.VALUE: value, pk.Attribute.LABEL: name, pk.Attribute.ID: key_id(alg.value, version)})
    return session.create_object(attrs)


def generate_secret(session: Any, name: str, alg: Alg, bits: int, version: int, usage: Usage,
                    extractable: bool) -> Any:
    pk = p11()
    kt = _key_type(alg, bits // 8)
    template = _template(usage, extractable)
    if kt != pk.KeyType.AES:
        template[pk.Attribute.VALUE_LEN] = pk.constants.DEFAULT  # fixed by the DES2/DES3 key type
        mech = pk.Mechanism.DES2_KEY_GEN if kt == pk.KeyType.DES2 else pk.Mechanism.DES3_KEY_GEN
    else:
        mech = pk.Mechanism.AES_KEY_GEN
    return session.generate_key(kt, bits, id=key_id(alg.value, version), label=name, store=True, mechanism=mech,
                                template=template)


def unwrap_secret(session: Any, kek: Any, blob: WrappedKey, name: str, alg: Alg, version: int, usage: Usage,
                  extractable: bool) -> Any:
    pk = p11()
    nbytes = len(blob.wrapped) - 8  # RFC 3394 §2.2.1 / RFC 5649 §4.1: one 64-bit block more than the key
    template = _template(usage, extractable)
    if alg is not Alg.AES:
        template[pk.Attribute.VALUE_LEN] = pk.constants.DEFAULT
    return kek.unwrap_key(pk.ObjectClass.SECRET_KEY, _key_type(alg, nbytes), blob.wrapped,
                          id=key_id(alg.value, version), label=name, store=True,
                          mechanism=wrap_mechanism(blob.mechanism), template=template)


def wrap_mechanism(name: str) -> Any:
    pk = p11()
    if name == "aes-kw":
        return pk.Mechanism.AES_KEY_WRAP  # RFC 3394
    if name == "aes-kwp":
        return pk.Mechanism.AES_KEY_WRAP_PAD  # RFC 5649 in SoftHSM2 (PKCS#11 v2.40 value 0x210A)
    raise KeystoreError(f"unknown wrapping mechanism {name!r} (aes-kw = RFC 3394, aes-kwp = RFC 5649)")


def ecb_mechanism(alg: Alg) -> Any:
    pk = p11()
    return pk.Mechanism.AES_ECB if alg is Alg.AES else pk.Mechanism.DES3_ECB


def level_data(d: bytes, n: int) -> bytes:
    """D ‖ ~D for one diversification level (:func:`cardkit.crypto.diversify.chain`)."""
    d = bytes(d)
    if len(d) != 8:
        raise KeystoreError(f"diversification level {n} must be 8 bytes, got {len(d)}")
    return d + bytes(b ^ 0xFF for b in d)


def derive_in_token(key: Any, alg: Alg, data: bytes, *, final: bool) -> Any:
    """C_DeriveKey with CKM_AES_ECB_ENCRYPT_DATA / CKM_DES3_ECB_ENCRYPT_DATA (PKCS#11 v2.40 §2.16): a
    sensitive, non-extractable session key = ECB(key, data)."""
    pk = p11()
    a = pk.Attribute
    template = {a.TOKEN: False, a.PRIVATE: True, a.SENSITIVE: True, a.EXTRACTABLE: False, a.DERIVE: not final,
                a.ENCRYPT: True, a.SIGN: True, a.WRAP: False, a.UNWRAP: False, a.DECRYPT: False}
    if alg is Alg.AES:
        return key.derive_key(pk.KeyType.AES, 128, mechanism=pk.Mechanism.AES_ECB_ENCRYPT_DATA,
                              mechanism_param=data, template=template)
    # CK_KEY_DERIVATION_STRING_DATA {CK_BYTE_PTR pData; CK_ULONG ulLen} (PKCS#11 v2.40 §2.16.3), native layout;
    # python-pkcs11 passes a bytes parameter through as is. ``buf`` outlives the call.
    buf = ctypes.create_string_buffer(data, len(data))
    param = struct.pack("PL", ctypes.addressof(buf), len(data))
    template[a.VALUE_LEN] = pk.constants.DEFAULT
    out = key.derive_key(pk.KeyType.DES2, 128, mechanism=pk.Mechanism.DES3_ECB_ENCRYPT_DATA, mechanism_param=param,
                         template=template)
    del buf
    return out


def extract(session: Any, obj: Any) -> bytes:
    """The value of an extractable (still sensitive) key: C_WrapKey under a one-time AES-256 key
    (CKM_AES_KEY_WRAP, RFC 3394), unwrapped in the host."""
    pk = p11()
    a = pk.Attribute
    one_time = secrets.token_bytes(32)
    wk = session.create_object({a.CLASS: pk.ObjectClass.SECRET_KEY, a.KEY_TYPE: pk.KeyType.AES, a.VALUE: one_time,
                                a.TOKEN: False, a.WRAP: True, a.UNWRAP: False, a.ENCRYPT: False, a.DECRYPT: False})
    try:
        wrapped = bytes(wk.wrap_key(obj, mechanism=pk.Mechanism.AES_KEY_WRAP))
    finally:
        wk.destroy()
    return keywrap.aes_key_unwrap(one_time, wrapped)


def token_kcvs(obj: Any, alg: Alg) -> dict[str, str]:
    """KCVs of a token key computed in the token (C_Encrypt / C_Sign with CMAC)."""
    pk = p11()
    out = {}
    for method in kcv_methods_for(alg):
        block, n = _KCV_INPUT[method]
        if method is KcvMethod.AES_CMAC:
            full = bytes(obj.sign(block, mechanism=pk.Mechanism.AES_CMAC))
        else:
            full = bytes(obj.encrypt(block, mechanism=ecb_mechanism(alg)))
        out[method.value] = full[:n].hex().upper()
    return out


def info_from_meta(meta: dict[str, Any]) -> KeyInfo:
    kcvs = {str(k): str(v) for k, v in dict(meta.get("kcvs", {})).items()}
    alg = str(meta.get("alg"))
    if alg in ("aes", "3des", "sm4"):
        method = default_kcv_method(Alg(alg)).value
    else:
        method = "spki-sha256"
    return KeyInfo(str(meta.get("name")), alg, int(meta.get("version", 1)), int(meta.get("bits", 0)),
                   kcvs.get(method, "?"), method, str(meta.get("usage")), bool(meta.get("extractable")),
                   str(meta.get("origin")), meta.get("created"), kcvs, tuple(meta.get("custodians", ())))


# ---------------------------------------------------------------------------------------- signing keys


def generate_keypair(session: Any, name: str, alg: SignAlg, version: int) -> tuple[str, int]:
    """A key pair in the token (private: sensitive, never extractable); returns (SPKI fingerprint, bits)."""
    pk = p11()
    a = pk.Attribute
    kid = key_id(alg.value, version)
    pub_t: dict[Any, Any] = {a.TOKEN: True, a.PRIVATE: False, a.VERIFY: True, a.ENCRYPT: False, a.WRAP: False}
    priv_t = {a.TOKEN: True, a.PRIVATE: True, a.SENSITIVE: True, a.EXTRACTABLE: False, a.SIGN: True,
              a.DECRYPT: False, a.UNWRAP: False, a.DERIVE: False}
    if alg is SignAlg.ECDSA_P256:
        params = session.create_domain_parameters(pk.KeyType.EC, {a.EC_PARAMS: P256_PARAMS}, local=True)
        pub, _ = params.generate_keypair(id=kid, label=name, store=True, public_template=pub_t,
                                         private_template=priv_t)
        bits = 256
    else:
        bits = int(alg.value.split("-")[1])
        pub_t[a.PUBLIC_EXPONENT] = _RSA_E
        pub, _ = session.generate_keypair(pk.KeyType.RSA, bits, id=kid, label=name, store=True,
                                          public_template=pub_t, private_template=priv_t)
    return spki_fingerprint(public_der(pub, alg)), bits


def public_der(pub: Any, alg: SignAlg) -> bytes:
    a = p11().Attribute
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    if alg is SignAlg.ECDSA_P256:
        point = bytes(pub[a.EC_POINT])
        if len(point) == 67 and point[:2] == b"\x04\x41":  # DER OCTET STRING around the X9.62 point
            point = point[2:]
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    else:
        key = rsa.RSAPublicNumbers(int.from_bytes(bytes(pub[a.PUBLIC_EXPONENT]), "big"),
                                   int.from_bytes(bytes(pub[a.MODULUS]), "big")).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class Pkcs11Signer:
    """A :class:`~cardkit.keys.store.Signer` whose private key stays in the token."""

    def __init__(self, conn: Connection, priv: Any, pub: Any, name: str, alg: SignAlg) -> None:
        self._conn, self._priv, self._pub = conn, priv, pub
        self.name, self.alg = name, alg

    def public_key_der(self) -> bytes:
        with self._conn.lock, translate(f"reading public key {self.name!r}", self._conn.token):
            return public_der(self._pub, self.alg)

    def public_key_pem(self) -> bytes:
        return pem_from_der(self.public_key_der())

    @property
    def key_id(self) -> str:
        return spki_fingerprint(self.public_key_der())

    def sign(self, data: bytes, *, pss: bool = True) -> bytes:
        pk = p11()
        m = pk.Mechanism
        with self._conn.lock, translate(f"signing with {self.name!r}", self._conn.token):
            if self.alg is SignAlg.ECDSA_P256:
                digest = hashlib.sha256(bytes(data)).digest()
                return der_from_raw_ecdsa(bytes(self._priv.sign(digest, mechanism=m.ECDSA)))
            if pss:
                return bytes(self._priv.sign(bytes(data), mechanism=m.SHA256_RSA_PKCS_PSS,
                                             mechanism_param=(m.SHA256, pk.MGF.SHA256, PSS_SALT_LENGTH)))
            return bytes(self._priv.sign(bytes(data), mechanism=m.SHA256_RSA_PKCS))

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.name!r}, {self.alg.value}, token={self._conn.token!r})"


# ------------------------------------------------------------------------------------------ key handle


class Pkcs11KeyHandle:
    """A :class:`~cardkit.keys.store.KeyHandle` on a token key; ``temporary`` objects (derived card keys)
    are destroyed by :meth:`close`."""

    def __init__(self, conn: Connection, obj: Any, name: str, alg: Alg, *, temporary: bool) -> None:
        self._conn, self._obj, self._temporary = conn, obj, temporary
        self.name, self.alg = name, alg

    @property
    def length(self) -> int:
        pk = p11()
        with self._conn.lock, translate(f"reading the length of {self.name!r}", self._conn.token):
            kt = self._o().key_type
            if kt == pk.KeyType.DES2:
                return 16
            if kt == pk.KeyType.DES3:
                return 24
            return int(self._o()[pk.Attribute.VALUE_LEN])

    def _o(self) -> Any:
        if self._obj is None:
            raise KeystoreError(f"key handle {self.name!r} is closed")
        return self._obj

    def _check(self, data: bytes) -> bytes:
        data = bytes(data)
        if not data or len(data) % block_size(self.alg):
            raise KeystoreError(f"{self.alg.value}: data length {len(data)} is not a non-empty multiple of the "
                                f"block size {block_size(self.alg)}")
        return data

    def encrypt_ecb(self, data: bytes) -> bytes:
        data = self._check(data)
        with self._conn.lock, translate(f"encrypting with {self.name!r}", self._conn.token):
            return bytes(self._o().encrypt(data, mechanism=ecb_mechanism(self.alg)))

    def encrypt_cbc(self, data: bytes, iv: bytes | None = None) -> bytes:
        data = self._check(data)
        pk = p11()
        ivb = bytes(block_size(self.alg)) if iv is None else bytes(iv)
        if len(ivb) != block_size(self.alg):
            raise KeystoreError(f"{self.alg.value}: IV must be {block_size(self.alg)} bytes, got {len(ivb)}")
        mech = pk.Mechanism.AES_CBC if self.alg is Alg.AES else pk.Mechanism.DES3_CBC
        with self._conn.lock, translate(f"encrypting with {self.name!r}", self._conn.token):
            return bytes(self._o().encrypt(data, mechanism=mech, mechanism_param=ivb))

    def cmac(self, data: bytes) -> bytes:
        pk = p11()
        mech = pk.Mechanism.AES_CMAC if self.alg is Alg.AES else pk.Mechanism.DES3_CMAC
        with self._conn.lock, translate(f"computing a CMAC with {self.name!r}", self._conn.token):
            return bytes(self._o().sign(bytes(data), mechanism=mech))

    def kcv(self, method: KcvMethod | None = None) -> str:
        m = method or default_kcv_method(self.alg)
        if m not in kcv_methods_for(self.alg):
            raise KeystoreError(f"KCV method {m.value} does not apply to {self.alg.value} keys")
        block, n = _KCV_INPUT[m]
        out = self.cmac(block) if m is KcvMethod.AES_CMAC else self.encrypt_ecb(block)
        return out[:n].hex().upper()

    def close(self) -> None:
        if self._obj is not None and self._temporary:
            with self._conn.lock, translate(f"destroying {self.name!r}", self._conn.token):
                self._obj.destroy()
        self._obj = None

    def __enter__(self) -> Pkcs11KeyHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pkcs11KeyHandle({self.name!r}, {self.alg.value}, token={self._conn.token!r})"
