"""Offline key identification: which key set (and which diversification) does this card use?

Given ONE INITIALIZE UPDATE response and the host challenge that produced it, every candidate key set is tried
under every applicable diversification scheme against the card cryptogram — nothing is sent to the card, so
no EXTERNAL AUTHENTICATE can fail and no retry counter moves (GPCS 2.3.1 §11.5 / §E.4.2, Amendment D §6.2.2).

What a match proves: in SCP02 the card cryptogram is computed with the ENC key (S-ENC); in SCP03 with the MAC
key (S-MAC). In SCP03 with a pseudo-random card challenge (i bit ``10``) and a known security domain AID the
challenge also proves the ENC key. The DEK is never proven by INITIALIZE UPDATE. Each match says so.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cardkit.crypto import Alg
from cardkit.errors import CardkitError
from cardkit.sm import scp02, scp03
from cardkit.sm.gp import Diversification, GpKeySet, InitializeUpdateError, diversify, scheme_applies

__all__ = ["KeyMatch", "identify", "parse_initialize_update"]

logger = logging.getLogger(__name__)

# GPCS 2.3.1 §11.5.3 / §E.5.1.3: SCP01/SCP02 responses are 28 bytes; Amendment D §7.1.1.3: SCP03 29/32/45/48.
_SCP02_LENGTH = 28
_SCP03_LENGTHS = (29, 32, 45, 48)
# A response copied with its status word 9000 (ISO 7816-4 §5.6) is accepted too.
_SW_OK = b"\x90\x00"

_SCHEME_TEXT = {
    Diversification.NONE: "no diversification (static keys)",
    Diversification.EMV: "EMV CPS diversification",
    Diversification.VISA2: "VISA2 diversification",
    Diversification.KDF3: "KDF3 diversification",
}


def _strip_sw(data: bytes) -> bytes:
    data = bytes(data)
    if len(data) - 2 in (_SCP02_LENGTH, *_SCP03_LENGTHS) and data.endswith(_SW_OK):
        return data[:-2]
    return data


@dataclass(frozen=True)
class _Parsed:
    protocol: str
    kdd: bytes
    key_version: int
    scp_id: int
    i: int | None
    sequence_counter: bytes | None
    card_challenge: bytes
    card_cryptogram: bytes
    s16: bool


def _parse(data: bytes) -> _Parsed:
    raw = _strip_sw(data)
    if len(raw) == _SCP02_LENGTH:
        if raw[11] == 0x01:
            raise InitializeUpdateError("SCP01 responses are not supported (SCP02 and SCP03 only)", offset=11)
        r2 = scp02.Scp02InitResponse.parse(raw)
        return _Parsed("SCP02", r2.kdd, r2.key_version, r2.scp_id, None, r2.sequence_counter, r2.card_challenge,
                       r2.card_cryptogram, False)
    if len(raw) in _SCP03_LENGTHS:
        r3 = scp03.Scp03InitResponse.parse(raw)
        return _Parsed("SCP03", r3.kdd, r3.key_version, r3.scp_id, r3.i, r3.sequence_counter, r3.card_challenge,
                       r3.card_cryptogram, r3.s16)
    raise InitializeUpdateError(
        f"an INITIALIZE UPDATE response is 28 (SCP02) or 29/32/45/48 (SCP03) bytes, got {len(raw)}")


def parse_initialize_update(data: bytes) -> dict[str, bytes | int | str | bool | None]:
    """Decode an INITIALIZE UPDATE response (optionally followed by 9000) into named fields.

    Keys: ``protocol`` ("SCP02"/"SCP03"), ``kdd``, ``key_version``, ``scp_id``, ``i`` (SCP03 only, else
    None), ``sequence_counter`` (None when absent), ``card_challenge``, ``card_cryptogram``, ``s16``.
    Raises :class:`~cardkit.sm.gp.InitializeUpdateError` for any other layout (and for SCP01).
    """
    p = _parse(data)
    return {"protocol": p.protocol, "kdd": p.kdd, "key_version": p.key_version, "scp_id": p.scp_id, "i": p.i,
            "sequence_counter": p.sequence_counter, "card_challenge": p.card_challenge,
            "card_cryptogram": p.card_cryptogram, "s16": p.s16}


@dataclass(frozen=True)
class KeyMatch:
    """One candidate that reproduces the card cryptogram.

    ``keys`` are the card keys after diversification (their repr shows KCVs only); ``proven`` names the keys
    the response actually proves (``("mac",)`` for SCP03, ``("enc",)`` for SCP02, plus ``"enc"`` for an SCP03
    pseudo-random challenge checked against ``isd_aid``).
    """

    label: str
    scheme: Diversification
    protocol: str
    keys: GpKeySet
    proven: tuple[str, ...]
    explanation: str


def _candidates(candidates: Mapping[str, GpKeySet] | Iterable[GpKeySet]) -> list[tuple[str, GpKeySet]]:
    if isinstance(candidates, Mapping):
        return [(str(k), v) for k, v in candidates.items()]
    return [(f"candidate {n + 1}", ks) for n, ks in enumerate(candidates)]


def identify(response: bytes, host_challenge: bytes, candidates: Mapping[str, GpKeySet] | Iterable[GpKeySet], *,
             schemes: Sequence[Diversification] = tuple(Diversification), isd_aid: bytes | None = None,
             scp02_i: int = 0x55) -> list[KeyMatch]:
    """Try every candidate × scheme against the card cryptogram of one INITIALIZE UPDATE response.

    ``candidates`` is a mapping label → :class:`GpKeySet` (master keys for diversified schemes) or a plain
    iterable (labelled "candidate 1", …). Candidates whose algorithm does not fit the protocol (AES for SCP03,
    3DES for SCP02) or the scheme are skipped. ``scp02_i`` only matters for one-base-key cards (i bit ``01``
    clear). Returns the matches, best first (more keys proven first); an empty list means no candidate fits.
    """
    info = _parse(response)
    protocol = info.protocol
    host_challenge = bytes(host_challenge)
    want_hc = 16 if info.s16 else 8
    if len(host_challenge) != want_hc:
        raise InitializeUpdateError(f"the response needs the {want_hc}-byte host challenge that produced it, "
                                    f"got {len(host_challenge)} bytes")
    alg = Alg.AES if protocol == "SCP03" else Alg.DES3
    matches: list[KeyMatch] = []
    tried = 0
    for label, master in _candidates(candidates):
        if master.alg is not alg:
            logger.debug("identify: %s skipped (%s keys, %s needs %s)", label, master.alg.value, protocol, alg.value)
            continue
        for scheme in schemes:
            if not scheme_applies(scheme, master.alg):
                continue
            tried += 1
            try:
                card_keys = diversify(master, scheme, info.kdd)
                proven = _test(card_keys, host_challenge, info, isd_aid, scp02_i)
            except CardkitError as exc:  # e.g. a key length a scheme cannot take
                logger.debug("identify: %s / %s not testable: %s", label, scheme.value, exc)
                continue
            if proven:
                matches.append(KeyMatch(label, scheme, protocol, card_keys, proven,
                                        _explain(label, scheme, protocol, card_keys, proven, info)))
    logger.debug("identify: %d combinations tried, %d match", tried, len(matches))
    matches.sort(key=lambda m: -len(m.proven))
    return matches


def _test(keys: GpKeySet, host_challenge: bytes, info: _Parsed, isd_aid: bytes | None,
          scp02_i: int) -> tuple[str, ...]:
    seq = info.sequence_counter
    if info.protocol == "SCP02" and seq is not None:
        sk2 = scp02.Scp02SessionKeys.derive(keys, seq, scp02_i)
        got = scp02.card_cryptogram(sk2.s_enc, host_challenge, seq, info.card_challenge)
        return ("enc",) if hmac.compare_digest(got, info.card_cryptogram) else ()
    sk3 = scp03.Scp03SessionKeys.derive(keys, host_challenge, info.card_challenge)
    got = scp03.card_cryptogram(sk3.s_mac, host_challenge, info.card_challenge)
    if not hmac.compare_digest(got, info.card_cryptogram):
        return ()
    if info.i is not None and info.i & scp03.I_PSEUDO_RANDOM and isd_aid is not None and seq is not None:
        want = scp03.card_challenge(keys.enc, seq, isd_aid, len(info.card_challenge))
        if hmac.compare_digest(want, info.card_challenge):
            return ("mac", "enc")
    return ("mac",)


def _explain(label: str, scheme: Diversification, protocol: str, keys: GpKeySet, proven: tuple[str, ...],
             info: _Parsed) -> str:
    kcvs = keys.kcvs()
    kvn = info.key_version
    proof = {
        ("enc",): "the card cryptogram proves the ENC key",
        ("mac",): "the card cryptogram proves the MAC key",
        ("mac", "enc"): "the card cryptogram proves the MAC key and the pseudo-random card challenge the ENC key",
    }[proven]
    unproven = [k for k in ("enc", "mac", "dek") if k not in proven]
    return (f"{protocol} key version {kvn:02X}: '{label}' with {_SCHEME_TEXT[scheme]} reproduces the card "
            f"cryptogram; {proof} (card key KCVs: " + ", ".join(f"{k.upper()} {kcvs[k].hex().upper()}" for k in proven)
            + "). Not proven by this response: " + ", ".join(k.upper() for k in unproven) + ".")
