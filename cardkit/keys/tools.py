"""Technician tools over keystores: card-key derivation by scheme through key handles, and offline key
identification (:mod:`cardkit.sm.identify`) with candidate key sets from a keystore.

Derivation through a :class:`~cardkit.keys.store.KeyHandle` keeps the master where it lives (token or
store): EMV CPS and VISA2 are one ECB encryption under the master (EMV CPS v1.1 §4.1; Visa GP 2.1.1 CIR),
KDF3 is NIST SP 800-108 counter mode with AES-CMAC as PRF — every PRF call is a CMAC in the keystore. The
resulting card keys are values in host memory (the card protocols need them there).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cardkit.crypto import Alg, block_size
from cardkit.crypto.diversify import KDD_LEN
from cardkit.errors import KeystoreError
from cardkit.keys.store import KeyCustody, KeyHandle, KeyInfo
from cardkit.sm.gp import Diversification, GpKeySet, scheme_applies
from cardkit.sm.identify import identify, parse_initialize_update

__all__ = ["SCHEMES", "IdentifyHit", "candidate_sets", "derive_with_handle", "identify_with_keystore"]

log = logging.getLogger(__name__)

#: Schemes of :func:`derive_with_handle` (``chain`` goes through ``KeyCustody.derive_handle`` instead).
SCHEMES = ("emv", "visa2", "kdf3")
# EMV CPS v1.1 §4.1: separators before the key id in the left / right half of the diversification data.
_LEFT, _RIGHT = 0xF0, 0x0F


def _kdd(kdd: bytes) -> bytes:
    kdd = bytes(kdd)
    if len(kdd) != KDD_LEN:
        raise KeystoreError(f"key diversification data must be {KDD_LEN} bytes, got {len(kdd)}")
    return kdd


def derive_with_handle(master: KeyHandle, scheme: str, kdd: bytes, key_id: int) -> bytes:
    """The card key of ``scheme`` (emv, visa2, kdf3) for KDD ``kdd`` and key id ``key_id`` (1 ENC, 2 MAC,
    3 DEK), computed with the master's handle. Same results as :mod:`cardkit.crypto.diversify`."""
    k = _kdd(kdd)
    if not 0 <= key_id <= 0xFF:
        raise KeystoreError(f"key id must be one byte, got {key_id}")
    if scheme in ("emv", "visa2"):
        if master.alg is not Alg.DES3:
            raise KeystoreError(f"{scheme} diversification needs a 3DES master key, {master.name!r} is "
                                f"{master.alg.value}")
        half = k[4:10] if scheme == "emv" else k[0:2] + k[4:8]
        return master.encrypt_ecb(half + bytes([_LEFT, key_id]) + half + bytes([_RIGHT, key_id]))
    if scheme == "kdf3":
        if master.alg is not Alg.AES:
            raise KeystoreError(f"kdf3 diversification needs an AES master key, {master.name!r} is "
                                f"{master.alg.value}")
        # GlobalPlatformPro "kdf3": PRF input i ‖ 00 00 00 id 00 ‖ KDD, output as long as the master key.
        fixed = bytes([0, 0, 0, key_id, 0]) + k
        n = -(-master.length // block_size(Alg.AES))
        return b"".join(master.cmac(bytes([i]) + fixed) for i in range(1, n + 1))[: master.length]
    raise KeystoreError(f"unknown diversification scheme {scheme!r} (emv, visa2, kdf3, chain)")


@dataclass(frozen=True)
class Candidate:
    label: str
    alg: Alg
    names: tuple[str, str, str]  # enc, mac, dek key names (may be the same name three times)


def candidate_sets(store: KeyCustody, names: Sequence[str] | None = None) -> list[Candidate]:
    """GP key sets in a keystore: ``NAME-enc``/``NAME-mac``/``NAME-dek`` triples, and every other AES/3DES
    key as a one-key set (the same key as ENC, MAC and DEK)."""
    infos: list[KeyInfo] = [i for i in store.entries() if i.alg in ("aes", "3des") and i.usage == "master"]
    by_name = {(i.name, i.alg): i for i in infos}
    out: list[Candidate] = []
    used: set[tuple[str, str]] = set()
    for (name, alg) in sorted(by_name):
        if name.endswith("-enc"):
            stem = name[: -len("-enc")]
            if (f"{stem}-mac", alg) in by_name and (f"{stem}-dek", alg) in by_name:
                out.append(Candidate(f"{stem} ({alg})", Alg(alg), (name, f"{stem}-mac", f"{stem}-dek")))
                used |= {(name, alg), (f"{stem}-mac", alg), (f"{stem}-dek", alg)}
    for (name, alg) in sorted(by_name):
        if (name, alg) not in used:
            out.append(Candidate(f"{name} ({alg})", Alg(alg), (name, name, name)))
    if names:
        wanted = set(names)
        out = [c for c in out if wanted & {c.label.split(" ")[0], *c.names}]
    return out


@dataclass(frozen=True)
class IdentifyHit:
    label: str
    scheme: str
    protocol: str
    proven: tuple[str, ...]
    card_kcvs: dict[str, str]
    explanation: str


def identify_with_keystore(response: bytes, host_challenge: bytes, store: KeyCustody, *,
                           names: Sequence[str] | None = None, isd_aid: bytes | None = None) -> list[IdentifyHit]:
    """Which keystore key set (and which diversification) produced this INITIALIZE UPDATE response.

    Diversified schemes are computed through handles (masters stay in the keystore); "none" (static keys)
    needs the key values and is tried only for extractable keys.
    """
    info = parse_initialize_update(response)
    kdd, protocol, kvn = bytes(info["kdd"]), str(info["protocol"]), int(info["key_version"])  # type: ignore[arg-type]
    hits: list[IdentifyHit] = []
    for cand in candidate_sets(store, names):
        for scheme in Diversification:
            if not scheme_applies(scheme, cand.alg):
                continue
            try:
                card = _card_keys(store, cand, scheme, kdd)
            except KeystoreError as exc:
                log.debug("identify: %s / %s skipped: %s", cand.label, scheme.value, exc)
                continue
            matches = identify(response, host_challenge, {cand.label: card}, schemes=[Diversification.NONE],
                               isd_aid=isd_aid)
            for m in matches:
                kcvs = {k: v.hex().upper() for k, v in card.kcvs().items()}
                proven = ", ".join(f"{k.upper()} {kcvs[k]}" for k in m.proven)
                hits.append(IdentifyHit(cand.label, scheme.value, protocol, m.proven, kcvs,
                                        f"{protocol} key version {kvn:02X}: '{cand.label}' with {scheme.value} "
                                        f"diversification reproduces the card cryptogram (proves {proven})"))
    hits.sort(key=lambda h: -len(h.proven))
    return hits


def _card_keys(store: KeyCustody, cand: Candidate, scheme: Diversification, kdd: bytes) -> GpKeySet:
    if scheme is Diversification.NONE:
        values = [store.key(n, cand.alg).value for n in cand.names]  # raises for non-extractable keys
        return GpKeySet(values[0], values[1], values[2], alg=cand.alg)
    out = []
    for key_id, name in enumerate(cand.names, start=1):
        handle = store.handle(name, cand.alg)
        try:
            out.append(derive_with_handle(handle, scheme.value, kdd, key_id))
        finally:
            handle.close()
    return GpKeySet(out[0], out[1], out[2], alg=cand.alg)
