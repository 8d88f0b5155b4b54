"""Signing keys in host memory (the encrypted store) and helpers shared with the PKCS#11 backend.

Signatures: ECDSA P-256 with SHA-256 (FIPS 186-5 §6, DER ``Ecdsa-Sig-Value`` of RFC 3279 §2.2.3); RSA with
SHA-256 as RSASSA-PSS (RFC 8017 §8.1, MGF1-SHA-256, salt length 32 — what ICAO 9303 Part 12 and BSI TR-03110
profiles use) or RSASSA-PKCS1-v1_5 (RFC 8017 §8.2) with ``pss=False``.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cardkit.errors import KeystoreError
from cardkit.keys.store import SignAlg

__all__ = ["PSS_SALT_LENGTH", "SoftwareSigner", "der_from_raw_ecdsa", "generate_private_pkcs8", "pem_from_der",
           "spki_fingerprint"]

#: RSASSA-PSS salt length = the SHA-256 output length (RFC 8017 §9.1 recommendation).
PSS_SALT_LENGTH = 32
# RSA public exponent F4 (RFC 8017 §3.1 permits any odd e; 65537 is the universal choice).
_RSA_E = 65537
_RSA_BITS = {SignAlg.RSA_2048: 2048, SignAlg.RSA_3072: 3072}


def spki_fingerprint(spki_der: bytes) -> str:
    """First 8 bytes of SHA-256 over the DER SubjectPublicKeyInfo, hex (a signing key's "KCV")."""
    return hashlib.sha256(spki_der).hexdigest()[:16].upper()


def pem_from_der(spki_der: bytes) -> bytes:
    """A DER SubjectPublicKeyInfo as PEM (RFC 7468 §13)."""
    key = serialization.load_der_public_key(spki_der)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def der_from_raw_ecdsa(raw: bytes) -> bytes:
    """PKCS#11 CKM_ECDSA gives r ‖ s (PKCS#11 v2.40 §2.3.1); encode as DER Ecdsa-Sig-Value."""
    if len(raw) % 2 or not raw:
        raise KeystoreError(f"ECDSA signature from the token has odd length {len(raw)}")
    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


def generate_private_pkcs8(alg: SignAlg) -> bytes:
    """A new private key as unencrypted PKCS#8 DER (kept only inside the encrypted store's payload)."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if alg is SignAlg.ECDSA_P256:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=_RSA_E, key_size=_RSA_BITS[alg])
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class SoftwareSigner:
    """A :class:`~cardkit.keys.store.Signer` over a PKCS#8 private key in host memory."""

    def __init__(self, name: str, alg: SignAlg, pkcs8: bytes) -> None:
        self.name, self.alg = name, alg
        try:
            key = serialization.load_der_private_key(pkcs8, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeystoreError(f"signing key {name!r} is damaged (not a PKCS#8 private key)") from None
        if alg is SignAlg.ECDSA_P256:
            if not (isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
                raise KeystoreError(f"signing key {name!r} is not an ECDSA P-256 key")
        elif not (isinstance(key, rsa.RSAPrivateKey) and key.key_size == _RSA_BITS[alg]):
            raise KeystoreError(f"signing key {name!r} is not a {alg.value} key")
        self._key = key

    def public_key_der(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    def public_key_pem(self) -> bytes:
        return pem_from_der(self.public_key_der())

    @property
    def key_id(self) -> str:
        return spki_fingerprint(self.public_key_der())

    def sign(self, data: bytes, *, pss: bool = True) -> bytes:
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(bytes(data), ec.ECDSA(hashes.SHA256()))
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH) if pss
            else padding.PKCS1v15())
        return self._key.sign(bytes(data), pad, hashes.SHA256())

    def __repr__(self) -> str:
        return f"SoftwareSigner({self.name!r}, {self.alg.value}, spki={spki_fingerprint(self.public_key_der())})"
