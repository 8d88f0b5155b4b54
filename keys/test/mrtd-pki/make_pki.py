#!/usr/bin/env python3
"""Make cardkit's TEST eMRTD PKI: a country signing CA (CSCA) and one document signer (DS).

TEST ONLY. The private keys are committed to the repository on purpose, so that tests and demos can sign
EF.SOD; anything they sign proves nothing. Never use these keys or certificates for real documents.

Run from anywhere (``.venv/bin/python keys/test/mrtd-pki/make_pki.py [--out DIR]``); it writes
``csca-cert.pem``, ``csca-key.pem``, ``ds-cert.pem`` and ``ds-key.pem`` beside itself (keys 0600). Every run
makes new keys: the committed outputs are the ones the tests use.

Profiles follow the certificate profiles of ICAO Doc 9303-12 in outline: the CSCA is self-signed with
basicConstraints cA (critical, path length 0), keyUsage keyCertSign + cRLSign (critical) and a subject key
identifier; the DS certificate has keyUsage digitalSignature (critical) and the authority key identifier of
the CSCA. Both use ECDSA on P-256 with SHA-256. The country is "UT" for Utopia, the ICAO specimen state
(not an ISO 3166 code).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BANNER = ("# TEST ONLY - cardkit test eMRTD PKI, made by keys/test/mrtd-pki/make_pki.py.\n"
          "# The private keys are public. NEVER use these for real documents.\n")
COUNTRY = "UT"
CSCA_VALIDITY = (dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2055, 1, 1, tzinfo=dt.UTC))
DS_VALIDITY = (dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2045, 1, 1, tzinfo=dt.UTC))


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cardkit TEST"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "TEST ONLY - not for real documents"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(BANNER.encode("ascii") + data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make(out: Path) -> None:
    csca_key = ec.generate_private_key(ec.SECP256R1())
    ds_key = ec.generate_private_key(ec.SECP256R1())
    csca_name = _name("cardkit TEST CSCA")
    csca_ski = x509.SubjectKeyIdentifier.from_public_key(csca_key.public_key())
    csca = (
        x509.CertificateBuilder()
        .subject_name(csca_name).issuer_name(csca_name)
        .public_key(csca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CSCA_VALIDITY[0]).not_valid_after(CSCA_VALIDITY[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(csca_ski, critical=False)
        .sign(csca_key, hashes.SHA256())
    )
    ds = (
        x509.CertificateBuilder()
        .subject_name(_name("cardkit TEST Document Signer 1")).issuer_name(csca_name)
        .public_key(ds_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(DS_VALIDITY[0]).not_valid_after(DS_VALIDITY[1])
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(csca_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ds_key.public_key()), critical=False)
        .sign(csca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "csca-cert.pem", csca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(out / "ds-cert.pem", ds.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(out / "csca-key.pem", _key_pem(csca_key), 0o600)
    _write(out / "ds-key.pem", _key_pem(ds_key), 0o600)


def main() -> None:
    parser = argparse.ArgumentParser(description="Make cardkit's TEST eMRTD PKI (CSCA + document signer). "
                                                 "TEST ONLY.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: beside this script)")
    args = parser.parse_args()
    make(args.out)
    print(f"TEST eMRTD PKI written to {args.out} (TEST ONLY - never for real documents)")


if __name__ == "__main__":
    main()
