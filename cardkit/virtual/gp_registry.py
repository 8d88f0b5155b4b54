"""The GlobalPlatform registry of the virtual card's issuer security domain: key sets, load files, applications.

Data only (plus their image encoding and the GET STATUS entry encoding); the commands that change them live in
:mod:`cardkit.virtual.gp` and :mod:`cardkit.virtual.gp_store`.

* :class:`KeySetEntry` — one Secure Channel key set (ENC, MAC, DEK) with its key version number, its
  authentication counter (failed INITIALIZE UPDATE / EXTERNAL AUTHENTICATE attempts lock it) and its sequence
  counter. A 3DES key set is used with SCP02, an AES key set with SCP03.
* :class:`LoadFile` — an executable load file already in the card (cardkit's virtual card has no Java Card VM:
  load files are "ROM" packages whose modules can be instantiated by INSTALL [for install]).
* :class:`AppInstance` — an application instance: AID, life cycle, privileges, and the data objects stored in
  it by STORE DATA (DGIs or BER-TLV objects), with the sensitive (encrypted-on-the-wire) ones marked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg
from cardkit.errors import CardkitError, ParseError
from cardkit.sm.gp import GpKeySet
from cardkit.tlv import ber_build, ber_encode

if TYPE_CHECKING:
    from cardkit.virtual.card import VirtualCard
    from cardkit.virtual.gp import IssuerSecurityDomain

__all__ = [
    "APP_INSTALLED", "APP_LOCKED", "APP_PERSONALIZED", "APP_SELECTABLE", "CARD_INITIALIZED", "CARD_LOCKED",
    "CARD_OP_READY", "CARD_SECURED", "CARD_STATES", "CARD_TERMINATED", "ELF_LOADED", "AppInstance",
    "GpImageError", "KeySetEntry", "LoadFile", "app_entry", "default_cplc", "elf_entry", "gp_oid", "isd_entry",
    "legacy_entry",
]

log = logging.getLogger(__name__)

# GPCS 2.3.1 §5.1.1 (card life cycle coding).
CARD_OP_READY = 0x01
CARD_INITIALIZED = 0x07
CARD_SECURED = 0x0F
CARD_LOCKED = 0x7F
CARD_TERMINATED = 0xFF
CARD_STATES = {CARD_OP_READY: "OP_READY", CARD_INITIALIZED: "INITIALIZED", CARD_SECURED: "SECURED",
               CARD_LOCKED: "CARD_LOCKED", CARD_TERMINATED: "TERMINATED"}
# GPCS 2.3.1 §5.3.1 (application life cycle coding): INSTALLED 03, SELECTABLE 07, application-specific states
# 0xxxx111, LOCKED = b8 set. cardkit's application model moves to 0F ("personalized", application-specific)
# after the last STORE DATA block.
APP_INSTALLED = 0x03
APP_SELECTABLE = 0x07
APP_PERSONALIZED = 0x0F
APP_LOCKED = 0x80
# GPCS 2.3.1 §5.2 (executable load file life cycle): LOADED.
ELF_LOADED = 0x01
# GPCS 2.3.1 §11.4.3.1 (GET STATUS tag-list format): registry data template and its objects.
_TAG_ENTRY = 0xE3
_TAG_AID = 0x4F
_TAG_LCS = 0x9F70
_TAG_PRIVILEGES = 0xC5
_TAG_ELF = 0xC4
_TAG_SD = 0xCC
_TAG_VERSION = 0xCE
_TAG_MODULE = 0x84
# GPCS 2.3.1 Appendix H: OIDs under {1 2 840 114283} (content octets of 1.2.840.114283).
GP_OID_PREFIX_BYTES = bytes.fromhex("2A864886FC6B")


class GpImageError(ParseError):
    """The ``gp`` part of a card image is not valid."""


# ------------------------------------------------------------------------------------------- key sets


@dataclass(eq=False)
class KeySetEntry:
    """A key set stored in the ISD. ``repr`` shows key check values only (through :class:`GpKeySet`)."""

    keys: GpKeySet
    max_tries: int
    tries_left: int
    #: SCP02: 2-byte sequence counter (incremented per opened session); SCP03: 3-byte counter (per
    #: INITIALIZE UPDATE with a pseudo-random card challenge). GPCS 2.3.1 §E.4.1, Amendment D §6.2.2.1.
    counter: int = 0

    @property
    def version(self) -> int:
        return self.keys.version

    @property
    def scp(self) -> int:
        """The protocol this key set serves: 3DES → SCP02, AES → SCP03."""
        return 0x02 if self.keys.alg is Alg.DES3 else 0x03

    @property
    def blocked(self) -> bool:
        return self.tries_left <= 0


# ------------------------------------------------------------------------------- load files and apps


@dataclass(eq=False)
class LoadFile:
    """An executable load file (GPCS 2.3.1 §5.2) with the executable modules it offers."""

    aid: bytes
    modules: tuple[bytes, ...]
    life_cycle: int = ELF_LOADED
    version: bytes = b"\x01\x00"


class AppInstance:
    """An application instance in the registry; also the :class:`cardkit.virtual.card.Application` the card
    selects by its AID while it is selectable (the ISD keeps ``card.applications`` in step).

    ``data`` maps a DGI number (or a BER-TLV tag of at most two bytes) to its value; ``sensitive`` holds the
    ids that arrived encrypted (they are never given back in clear); ``tlv`` the ids stored as BER-TLV.
    """

    def __init__(self, isd: IssuerSecurityDomain, aid: bytes, *, load_file: bytes, module: bytes,
                 privileges: bytes = b"\x00\x00\x00", life_cycle: int = APP_SELECTABLE,
                 params: bytes = b"") -> None:
        self.isd = isd
        self.aid = bytes(aid)
        self.load_file = bytes(load_file)
        self.module = bytes(module)
        self.privileges = bytes(privileges).ljust(3, b"\x00")
        self.life_cycle = life_cycle
        self.params = bytes(params)
        self.data: dict[int, bytes] = {}
        self.sensitive: set[int] = set()
        self.tlv: set[int] = set()

    def __repr__(self) -> str:
        return (f"AppInstance(aid={self.aid.hex().upper()}, life_cycle={self.life_cycle:02X}, "
                f"objects={len(self.data)})")

    @property
    def selectable(self) -> bool:
        """SELECTABLE or an application-specific state, and not LOCKED (GPCS 2.3.1 §5.3.1)."""
        return not self.life_cycle & APP_LOCKED and self.life_cycle & 0x07 == 0x07

    def memory(self) -> int:
        return sum(len(v) + 4 for v in self.data.values())

    # -- cardkit.virtual.card.Application
    def select(self, card: VirtualCard) -> bytes:
        return self.isd.app_selected(card, self)

    def process(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu | None:
        return self.isd.app_process(card, self, apdu)

    def deselect(self, card: VirtualCard) -> None:
        self.isd.deselected(card)


# ------------------------------------------------------------------------------------ GET STATUS


def _lcs(value: int) -> bytes:
    return ber_encode(_TAG_LCS, bytes((value,)))


def isd_entry(aid: bytes, life_cycle: int, privileges: bytes) -> bytes:
    """E3 entry of the ISD (GPCS 2.3.1 §11.4.3.1): AID, card life cycle, privileges."""
    return ber_build(_TAG_ENTRY, [ber_encode(_TAG_AID, aid), _lcs(life_cycle), ber_encode(_TAG_PRIVILEGES,
                                                                                            privileges)])


def app_entry(app: AppInstance, sd_aid: bytes) -> bytes:
    """E3 entry of an application: AID, life cycle, privileges, its load file, its security domain."""
    return ber_build(_TAG_ENTRY, [ber_encode(_TAG_AID, app.aid), _lcs(app.life_cycle),
                                  ber_encode(_TAG_PRIVILEGES, app.privileges), ber_encode(_TAG_ELF, app.load_file),
                                  ber_encode(_TAG_SD, sd_aid)])


def elf_entry(elf: LoadFile, sd_aid: bytes, *, modules: bool) -> bytes:
    """E3 entry of a load file (P1 20), with its executable modules (``84``) for P1 10."""
    parts = [ber_encode(_TAG_AID, elf.aid), _lcs(elf.life_cycle), ber_encode(_TAG_VERSION, elf.version)]
    if modules:
        parts += [ber_encode(_TAG_MODULE, m) for m in elf.modules]
    parts.append(ber_encode(_TAG_SD, sd_aid))
    return ber_build(_TAG_ENTRY, parts)


def legacy_entry(aid: bytes, life_cycle: int, privileges: bytes, modules: tuple[bytes, ...] | None = None) -> bytes:
    """GP 2.1.1 format (GET STATUS P2 b2 = 0): LV(AID) ‖ life cycle ‖ first privilege byte [‖ modules]."""
    out = bytes((len(aid),)) + aid + bytes((life_cycle,)) + privileges[:1]
    if modules is not None:
        out += bytes((len(modules),)) + b"".join(bytes((len(m),)) + m for m in modules)
    return out


# ----------------------------------------------------------------------------------- image encoding


def keyset_to_dict(entry: KeySetEntry) -> dict[str, Any]:
    k = entry.keys
    return {"version": k.version, "alg": k.alg.value, "enc": k.enc.hex().upper(), "mac": k.mac.hex().upper(),
            "dek": k.dek.hex().upper(), "max_tries": entry.max_tries, "tries_left": entry.tries_left,
            "counter": entry.counter}


def app_to_dict(app: AppInstance) -> dict[str, Any]:
    return {"aid": app.aid.hex().upper(), "load_file": app.load_file.hex().upper(),
            "module": app.module.hex().upper(), "privileges": app.privileges.hex().upper(),
            "life_cycle": app.life_cycle, "params": app.params.hex().upper(),
            "data": {f"{k:04X}": v.hex().upper() for k, v in sorted(app.data.items())},
            "sensitive": [f"{k:04X}" for k in sorted(app.sensitive)], "tlv": [f"{k:04X}" for k in sorted(app.tlv)]}


def elf_to_dict(elf: LoadFile) -> dict[str, Any]:
    return {"aid": elf.aid.hex().upper(), "modules": [m.hex().upper() for m in elf.modules],
            "life_cycle": elf.life_cycle, "version": elf.version.hex().upper()}


def hexval(value: object, what: str, lo: int = 0, hi: int = 65535) -> bytes:
    if not isinstance(value, str):
        raise GpImageError(f"gp image: {what} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise GpImageError(f"gp image: {what} is not valid hex") from None
    if not lo <= len(raw) <= hi:
        raise GpImageError(f"gp image: {what} must be {lo}..{hi} bytes, got {len(raw)}")
    return raw


def intval(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise GpImageError(f"gp image: {key} must be an integer {lo}..{hi}, got {v!r}")
    return v


def keyset_from_dict(d: object) -> KeySetEntry:
    if not isinstance(d, dict):
        raise GpImageError("gp image: key set entries must be objects")
    try:
        alg = Alg(d.get("alg"))
        keys = GpKeySet(hexval(d.get("enc"), "key"), hexval(d.get("mac"), "key"), hexval(d.get("dek"), "key"),
                        intval(d, "version", 1, 0xFF), alg=alg)
    except (ValueError, CardkitError) as exc:
        if isinstance(exc, GpImageError):
            raise
        raise GpImageError(f"gp image: invalid key set ({type(exc).__name__})") from None
    max_tries = intval(d, "max_tries", 1, 255)
    return KeySetEntry(keys, max_tries, intval(d, "tries_left", 0, max_tries), intval(d, "counter", 0, 0xFFFFFF))


def elf_from_dict(d: object) -> LoadFile:
    if not isinstance(d, dict) or not isinstance(d.get("modules"), list):
        raise GpImageError("gp image: load files must be objects with a module list")
    return LoadFile(hexval(d.get("aid"), "load file AID", 5, 16),
                    tuple(hexval(m, "module AID", 5, 16) for m in d["modules"]),
                    intval(d, "life_cycle", 0, 0xFF), hexval(d.get("version", "0100"), "load file version", 0, 8))


def app_from_dict(isd: IssuerSecurityDomain, d: object) -> AppInstance:
    if not isinstance(d, dict):
        raise GpImageError("gp image: applications must be objects")
    app = AppInstance(isd, hexval(d.get("aid"), "application AID", 5, 16),
                      load_file=hexval(d.get("load_file"), "load file AID", 5, 16),
                      module=hexval(d.get("module"), "module AID", 5, 16),
                      privileges=hexval(d.get("privileges"), "privileges", 1, 3),
                      life_cycle=intval(d, "life_cycle", 0, 0xFF), params=hexval(d.get("params", ""), "params"))
    data = d.get("data", {})
    if not isinstance(data, dict):
        raise GpImageError("gp image: application data must be an object")
    for key, value in data.items():
        app.data[int.from_bytes(hexval(key, "data id", 2, 2), "big")] = hexval(value, "application data")
    for name, target in (("sensitive", app.sensitive), ("tlv", app.tlv)):
        ids = d.get(name, [])
        if not isinstance(ids, list):
            raise GpImageError(f"gp image: {name} must be a list")
        for key in ids:
            ident = int.from_bytes(hexval(key, "data id", 2, 2), "big")
            if ident not in app.data:
                raise GpImageError(f"gp image: {name} names data {ident:04X} that the application does not hold")
            target.add(ident)
    return app


# ------------------------------------------------------------------------------------ GET DATA objects

def gp_oid(arcs: Sequence[int]) -> bytes:
    """Content octets of arcs appended to 1.2.840.114283 (X.690 §8.19: base-128, high bit = more)."""
    out = bytearray(GP_OID_PREFIX_BYTES)
    for arc in arcs:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def default_cplc(serial: bytes) -> bytes:
    """The 42 CPLC bytes (GP 2.1.1 layout, tag 9F7F) of a cardkit virtual card: fabricator/OS "CK" (434B),
    IC serial = the card serial; dates YDDD BCD; personalization fields not set (0000)."""
    return (bytes.fromhex("434B 0001 434B 5001 0100 5001") + serial + bytes.fromhex("0001 434B 0000 434B 0000")
            + bytes(2 + 2 + 4 + 2 + 2 + 4))
