"""The GlobalPlatform part of a card diagnosis (:mod:`cardkit.apps.diagnose`).

Without keys: SELECT the issuer security domain (the GP default AID, then the Open Platform card manager
AID), GET DATA of CPLC, card data, key information, IIN, CIN and sequence counter, and one GET STATUS
without a secure channel (most cards refuse it, a few answer). With a key set: an SCP03 (AES keys) or SCP02
(3DES keys) channel at C-MAC level, then GET STATUS of the ISD (the card life cycle), the applications and
security domains, and the executable load files, following ``6310`` "more data" pages.

Every result is JSON-able; a step that fails is recorded as ``{"error": reason}`` and the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.commands import gp
from cardkit.commands.gpdata import CardData, Cplc, GetStatusEntry, KeyInfo, RegistryKind, parse_get_status
from cardkit.errors import KeystoreError, ParseError
from cardkit.session import CardSession, Processor
from cardkit.sw import check, describe

if TYPE_CHECKING:
    from cardkit.keys.store import Keystore
    from cardkit.sm.gp import GpKeySet

__all__ = ["GpProbe", "gp_keyset"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Attempt = Callable[[str, Callable[[], Any]], tuple[Any, str | None]]

# GPCS 2.3.1 §11.3 and §H: GET DATA objects of the security domain (report name, tag).
GP_OBJECTS: tuple[tuple[str, int], ...] = (
    ("cplc", gp.TAG_CPLC), ("card_data", gp.TAG_CARD_DATA), ("key_info", gp.TAG_KEY_INFO), ("iin", gp.TAG_IIN),
    ("cin", gp.TAG_CIN), ("sequence_counter", gp.TAG_SEQUENCE_COUNTER))
_SW_MORE = 0x6310  # GPCS 2.3.1 §11.4.3: more data available (GET STATUS paging)
_SW_NONE = 0x6A88  # GPCS 2.3.1 §11.4.3: referenced data not found — no entry matches
_SUBSETS: tuple[RegistryKind, ...] = ("isd", "apps", "load-files")
_LEVEL_C_MAC = 0x01  # GPCS 2.3.1 §E.5.2.1: EXTERNAL AUTHENTICATE P1, C-MAC only
_DEFAULT_I = {3: 0x70, 2: 0x55}  # when the card data does not say: the common SCP03 / SCP02 options


def gp_keyset(keystore: Keystore, name: str) -> GpKeySet:
    """The GlobalPlatform key set ``name``: keys ``NAME-enc``/``NAME-mac``/``NAME-dek``, or one key ``NAME``
    for all three; AES (SCP03) is looked for before 3DES (SCP02)."""
    from cardkit.crypto import Alg
    from cardkit.sm.gp import GpKeySet

    reasons: list[str] = []
    for alg in (Alg.AES, Alg.DES3):
        try:
            enc, mac, dek = (keystore.key(f"{name}-{part}", alg).value for part in ("enc", "mac", "dek"))
            return GpKeySet(enc, mac, dek, alg=alg)
        except KeystoreError as exc:
            reasons.append(str(exc))
        try:
            return GpKeySet.single(keystore.key(name, alg).value, alg=alg)
        except KeystoreError as exc:
            reasons.append(str(exc))
    raise KeystoreError(f"no usable GlobalPlatform key set {name!r} ({name}-enc/-mac/-dek or {name}, AES or "
                        f"3DES): {'; '.join(dict.fromkeys(reasons))}")


def _value_of(data: bytes, tag: int) -> bytes:
    """GET DATA answers the whole object (tag ‖ length ‖ value) on most cards, the bare value on some."""
    from cardkit.tlv import ber_decode

    try:
        objs = ber_decode(data)
    except ParseError:
        return data
    return objs[0].value if len(objs) == 1 and objs[0].tag == tag else data


def _fci(data: bytes) -> dict[str, Any]:
    """What the ISD's FCI tells (GPCS 2.3.1 §11.9.3.1): 6F {84 AID, A5 {73 SD management data, 9F6E, 9F65}};
    some cards (cardkit's virtual ISD among them) add the card life cycle as 9F70."""
    from cardkit.commands.gpdata import life_cycle_name
    from cardkit.tlv import ber_find

    out: dict[str, Any] = {}
    try:
        lcs = ber_find(data, 0x9F70)
        max_len = ber_find(data, 0x9F65)
    except ParseError as exc:
        return {"fci_error": f"the FCI is not BER-TLV: {exc}"}
    if lcs is not None and len(lcs.value) == 1:
        out["card_life_cycle"] = life_cycle_name("card", lcs.value[0])
    if max_len is not None and max_len.value:
        out["max_command_data"] = int.from_bytes(max_len.value, "big")
    return out


def _card_data(data: bytes) -> dict[str, Any]:
    cd = CardData.parse(data)
    return {"gp_version": cd.gp_version, "scp": list(cd.scp_descriptions), "scp_list": [list(x) for x in cd.scp],
            "card_identification_scheme": cd.card_identification_scheme, "card_config": list(cd.card_config),
            "chip_details": list(cd.chip_details)}


def _key_info(data: bytes) -> list[dict[str, Any]]:
    return [{"id": e.key_id, "version": e.key_version,
             "components": [f"{c.name} ({c.length} bytes)" for c in e.components]}
            for e in KeyInfo.parse(data).entries]


def _registry_entry(e: GetStatusEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"aid": e.aid.hex().upper(), "life_cycle": e.life_cycle_name,
                           "life_cycle_byte": f"{e.life_cycle:02X}", "privileges": e.privilege_names}
    for name in ("associated_sd", "version", "load_file_aid"):
        value = getattr(e, name)
        if value is not None:
            out[name] = value.hex().upper()
    if e.modules:
        out["modules"] = [m.hex().upper() for m in e.modules]
    return out


_DECODERS: Mapping[str, Callable[[bytes], Any]] = {
    "cplc": lambda d: Cplc.parse(d).to_dict(), "card_data": _card_data, "key_info": _key_info}


class GpProbe:
    """Runs the GP steps on ``session``; ``attempt(step, fn)`` turns failures into reasons (the diagnosis')."""

    def __init__(self, session: CardSession, attempt: Attempt) -> None:
        self.s = session
        self.attempt = attempt

    @staticmethod
    def _check(cmd: CommandApdu, resp: ResponseApdu) -> bytes:
        return check(resp, cmd).data

    def select(self) -> tuple[bytes | None, dict[str, Any]]:
        out: dict[str, Any] = {}
        tried = []
        for aid in (gp.DEFAULT_ISD_AID, gp.LEGACY_ISD_AID):
            resp = self.s.transmit(gp.select_isd(aid))
            if resp.sw == 0x9000:
                out["isd"] = {"aid": aid.hex().upper(), "fci": resp.data.hex().upper()}
                out["isd"].update(_fci(resp.data))
                return aid, out
            tried.append(f"SELECT {aid.hex().upper()} answered {resp.sw:04X} {describe(resp.sw)}")
        out["isd"] = None
        out["error"] = "no GlobalPlatform issuer security domain: " + "; ".join(tried)
        return None, out

    def data(self) -> dict[str, Any]:
        """Everything readable without keys."""
        isd, out = self.select()
        if isd is None:
            return out
        for name, tag in GP_OBJECTS:
            cmd = gp.get_data_gp(tag)
            resp = self.s.transmit(cmd)
            if resp.sw == _SW_NONE:  # the object is not set on this card: a fact, not a problem
                out[name] = {"absent": f"not set on this card ({resp.sw:04X} {describe(resp.sw)})"}
                continue
            raw, why = self.attempt(f"GP GET DATA {tag:04X} ({name})", partial(self._check, cmd, resp))
            if raw is None:
                out[name] = {"error": why}
                continue
            decoder = _DECODERS.get(name)
            if decoder is None:
                out[name] = _value_of(raw, tag).hex().upper()
                continue
            value, why = self.attempt(f"GP {name}", partial(decoder, raw))
            out[name] = value if value is not None else {"error": why, "raw": raw.hex().upper()}
        # GPCS 2.3.1 §11.4: GET STATUS normally needs a secure channel; one try shows whether this card does.
        resp = self.s.transmit(gp.get_status("isd"))
        if resp.sw == 0x9000:
            out["registry"] = self.registry(first=resp.data)
        else:
            out["registry"] = {"error": f"GET STATUS without a secure channel answered {resp.sw:04X} "
                                        f"{describe(resp.sw)}: give --keys and --gp-keyset"}
        return out

    def with_keys(self, out: dict[str, Any], keystore: Keystore, name: str) -> None:
        """Open a secure channel with the key set ``name`` and replace ``out["registry"]`` by the listing."""
        from cardkit.sm.scp02 import Scp02Host
        from cardkit.sm.scp03 import Scp03Host

        isd = out.get("isd")
        if not isinstance(isd, dict):
            return
        aid = bytes.fromhex(isd["aid"])
        keys, why = self.attempt("GP key set", lambda: gp_keyset(keystore, name))
        if keys is None:
            out["registry"] = {"error": why}
            return
        scp = 3 if keys.alg.value == "aes" else 2
        card_data = out.get("card_data")
        offered = card_data.get("scp_list", []) if isinstance(card_data, dict) else []
        i = next((x[1] for x in offered if x[0] == scp), _DEFAULT_I[scp])
        self.s.transmit(gp.select_isd(aid))

        def open_channel() -> Processor:
            if scp == 3:
                return Scp03Host.open(self.s.transmit, keys, level=_LEVEL_C_MAC, isd_aid=aid)
            return Scp02Host.open(self.s.transmit, keys, level=_LEVEL_C_MAC, i=i)

        channel, why = self.attempt(f"GP secure channel (SCP0{scp})", open_channel)
        if channel is None:
            out["registry"] = {"error": f"not listed: {why}"}
            return
        self.s.push(channel)
        try:
            out["secure_channel"] = (f"SCP0{scp} i={i:02X}, key version {getattr(channel, 'key_version', 0):02X}, "
                                     "C-MAC")
            out["registry"] = self.registry()
        finally:
            self.s.remove(channel)

    def registry(self, first: bytes | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for subset in _SUBSETS:
            def listing(sub: RegistryKind = subset) -> list[dict[str, Any]]:
                if sub == "isd" and first is not None:
                    data = first
                else:
                    data, more, nxt = b"", True, False
                    while more:
                        resp = self.s.send(gp.get_status(sub, next=nxt), allow=(_SW_MORE, _SW_NONE))
                        if resp.sw == _SW_NONE:
                            return []
                        data += resp.data
                        more, nxt = resp.sw == _SW_MORE, True
                return [_registry_entry(e) for e in parse_get_status(data, sub)]
            entries, why = self.attempt(f"GP GET STATUS {subset}", listing)
            out[subset] = entries if entries is not None else {"error": why}
        isd = out.get("isd")
        if isinstance(isd, list) and isd:
            out["card_life_cycle"] = isd[0]["life_cycle"]
        return out
