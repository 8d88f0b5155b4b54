"""Decoders for GlobalPlatform data: CPLC, card recognition data, key information, GET STATUS entries.

Sources: GPCS 2.3.1 §11.3 (GET DATA objects, key information template), §11.4 (GET STATUS response), §11.1
(life-cycle states and privileges), Appendix H (card recognition data, OIDs under 1.2.840.114283); the CPLC
layout of GP 2.1.1 / Visa GP (42 bytes, tag 9F7F). Every parser raises :class:`~cardkit.errors.TlvError` for
malformed BER-TLV and :class:`GpDataError` for well-formed data that breaks the layout — nothing else.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cardkit.errors import ParseError
from cardkit.tlv import Tlv, ber_decode

logger = logging.getLogger(__name__)

__all__ = [
    "CARD_LIFE_CYCLE", "CPLC_FIELDS", "GP_OID_PREFIX", "CardData", "Cplc", "GetStatusEntry", "GpDataError",
    "KeyComponent", "KeyInfo", "KeyInfoEntry", "decode_oid", "decode_yddd", "key_type_name", "life_cycle_name",
    "parse_get_status", "privileges_names",
]


class GpDataError(ParseError):
    """GlobalPlatform data (CPLC, card data, key information, registry entry) that breaks its layout."""


# ------------------------------------------------------------------------------------------------ CPLC

# GP 2.1.1 / Visa GP 2.1.1 CPLC (tag 9F7F, 42 bytes): (field, length) in order.
CPLC_FIELDS: tuple[tuple[str, int], ...] = (
    ("ic_fabricator", 2), ("ic_type", 2), ("os_id", 2), ("os_release_date", 2), ("os_release_level", 2),
    ("ic_fabrication_date", 2), ("ic_serial_number", 4), ("ic_batch_id", 2), ("module_fabricator", 2),
    ("module_packaging_date", 2), ("icc_manufacturer", 2), ("ic_embedding_date", 2), ("prepersonalizer", 2),
    ("prepersonalization_date", 2), ("prepersonalization_equipment", 4), ("personalizer", 2),
    ("personalization_date", 2), ("personalization_equipment", 4),
)
CPLC_LENGTH = sum(n for _, n in CPLC_FIELDS)  # 42
_CPLC_TAG = b"\x9f\x7f"
_CPLC_DATES = frozenset(name for name, _ in CPLC_FIELDS if name.endswith("_date"))
# Widely published IC fabricator codes (CPLC bytes 1-2); anything else is shown as its hex value only.
IC_FABRICATORS: Mapping[int, str] = {0x4090: "Infineon", 0x4180: "Atmel", 0x4250: "Samsung", 0x4790: "NXP"}


def decode_yddd(raw: bytes, *, reference_year: int | None = None) -> str | None:
    """A CPLC date 'YDDD' (BCD: last digit of the year, day of the year) as ISO text.

    The decade is not encoded: the latest year ending in Y not after ``reference_year`` (default: this year)
    is assumed. ``0000`` → None (not set); anything that is not a valid date → ``"invalid (hex)"``.
    """
    if len(raw) != 2:
        raise GpDataError(f"a CPLC date is 2 bytes, got {len(raw)}")
    if raw == b"\x00\x00":
        return None
    digits = raw.hex()
    if not digits.isdigit():
        return f"invalid ({digits.upper()})"
    y, day = int(digits[0]), int(digits[1:])
    ref = _dt.date.today().year if reference_year is None else reference_year
    year = ref - ((ref - y) % 10)
    last_day = 366 if calendar.isleap(year) else 365
    if not 1 <= day <= last_day:
        return f"invalid ({digits.upper()})"
    return (_dt.date(year, 1, 1) + _dt.timedelta(days=day - 1)).isoformat()


@dataclass(frozen=True, slots=True)
class Cplc:
    """Card Production Life Cycle data (tag 9F7F); every field is the raw bytes of :data:`CPLC_FIELDS`."""

    ic_fabricator: bytes
    ic_type: bytes
    os_id: bytes
    os_release_date: bytes
    os_release_level: bytes
    ic_fabrication_date: bytes
    ic_serial_number: bytes
    ic_batch_id: bytes
    module_fabricator: bytes
    module_packaging_date: bytes
    icc_manufacturer: bytes
    ic_embedding_date: bytes
    prepersonalizer: bytes
    prepersonalization_date: bytes
    prepersonalization_equipment: bytes
    personalizer: bytes
    personalization_date: bytes
    personalization_equipment: bytes

    @classmethod
    def parse(cls, data: bytes) -> Cplc:
        """Decode the 42 CPLC bytes, bare or inside their ``9F7F 2A`` header (GET DATA response)."""
        raw = _as_bytes(data)
        if raw[:2] == _CPLC_TAG:
            objs = ber_decode(raw)
            if len(objs) != 1:
                raise GpDataError(f"expected one 9F7F object, found {len(objs)}")
            raw = objs[0].value
        if len(raw) != CPLC_LENGTH:
            raise GpDataError(f"CPLC must be {CPLC_LENGTH} bytes, got {len(raw)}")
        values: dict[str, bytes] = {}
        pos = 0
        for name, n in CPLC_FIELDS:
            values[name] = raw[pos:pos + n]
            pos += n
        return cls(**values)

    @property
    def fabricator_name(self) -> str | None:
        return IC_FABRICATORS.get(int.from_bytes(self.ic_fabricator, "big"))

    def to_bytes(self) -> bytes:
        return b"".join(getattr(self, name) for name, _ in CPLC_FIELDS)

    def to_dict(self, *, reference_year: int | None = None) -> dict[str, str | None]:
        """Every field in hex, plus ``*_text`` for the dates and ``ic_fabricator_name``."""
        out: dict[str, str | None] = {}
        for name, _ in CPLC_FIELDS:
            value: bytes = getattr(self, name)
            out[name] = value.hex().upper()
            if name in _CPLC_DATES:
                out[f"{name}_text"] = decode_yddd(value, reference_year=reference_year)
        out["ic_fabricator_name"] = self.fabricator_name
        return out


# ---------------------------------------------------------------------------------------- OIDs, card data

# GPCS 2.3.1 Appendix H: GlobalPlatform OIDs live under {iso(1) member-body(2) us(840) globalPlatform(114283)}.
GP_OID_PREFIX = "1.2.840.114283"
_OID_CARD_RECOGNITION = GP_OID_PREFIX + ".1"
_OID_GP_VERSION = GP_OID_PREFIX + ".2."
_OID_SCP = GP_OID_PREFIX + ".4."


def decode_oid(value: bytes) -> str:
    """The dotted text of an OBJECT IDENTIFIER's content octets (X.690 §8.19)."""
    raw = _as_bytes(value)
    if not raw:
        raise GpDataError("empty OBJECT IDENTIFIER")
    if raw[-1] & 0x80:
        raise GpDataError("OBJECT IDENTIFIER ends inside a subidentifier", offset=len(raw) - 1)
    arcs: list[int] = []
    acc, start = 0, True
    for i, b in enumerate(raw):
        if start and b == 0x80:  # X.690 §8.19.2: no leading 80 padding in a subidentifier
            raise GpDataError("OBJECT IDENTIFIER subidentifier has a leading 80 byte", offset=i)
        acc = (acc << 7) | (b & 0x7F)
        start = not b & 0x80
        if start:
            arcs.append(acc)
            acc = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _oids_in(obj: Tlv) -> tuple[str, ...]:
    if not obj.constructed:
        return (decode_oid(obj.value),) if obj.tag == 0x06 else (obj.value.hex().upper(),)
    return tuple(decode_oid(c.value) if c.tag == 0x06 else c.value.hex().upper() for c in obj.children)


@dataclass(frozen=True, slots=True)
class CardData:
    """Card recognition data (GET DATA 66 → template 73, GPCS 2.3.1 Appendix H)."""

    gp_version: str | None = None  # e.g. "2.1.1"
    card_identification_scheme: str | None = None  # OID text
    scp: tuple[tuple[int, int], ...] = ()  # (SCP number, i parameter)
    card_config: tuple[str, ...] = ()  # OIDs (or hex) inside tag 65
    chip_details: tuple[str, ...] = ()  # OIDs (or hex) inside tag 66
    other: tuple[tuple[int, bytes], ...] = ()  # objects of 73 not decoded above

    @property
    def scp_descriptions(self) -> tuple[str, ...]:
        """e.g. ``("SCP02 i=15",)`` — the i parameter in hex, as the specifications write it."""
        return tuple(f"SCP{n:02X} i={i:02X}" for n, i in self.scp)

    @classmethod
    def parse(cls, data: bytes) -> CardData:
        """Decode ``66 L 73 L ...`` or ``73 L ...``."""
        objs = ber_decode(_as_bytes(data))
        if len(objs) != 1:
            raise GpDataError(f"expected one card data template, found {len(objs)} objects")
        top = objs[0]
        if top.tag == 0x66:
            inner = top.find(0x73)
            if inner is None:
                raise GpDataError("card data (66) holds no card recognition data template (73)")
            top = inner
        if top.tag != 0x73:
            raise GpDataError(f"tag {top.tag:X} is neither card data (66) nor card recognition data (73)")
        fields: dict[str, object] = {}
        scp: list[tuple[int, int]] = []
        other: list[tuple[int, bytes]] = []
        for obj in top.children:
            if obj.tag == 0x06:  # the OID naming the template itself: 1.2.840.114283.1
                oid = decode_oid(obj.value)
                if oid != _OID_CARD_RECOGNITION:
                    logger.debug("card data: unexpected recognition OID %s", oid)
            elif obj.tag == 0x60:
                fields["gp_version"] = _suffix(_oids_in(obj), _OID_GP_VERSION)
            elif obj.tag == 0x63:
                ids = _oids_in(obj)
                fields["card_identification_scheme"] = ids[0] if ids else None
            elif obj.tag == 0x64:
                for oid in _oids_in(obj):
                    parts = oid[len(_OID_SCP):].split(".") if oid.startswith(_OID_SCP) else []
                    if len(parts) != 2 or not all(p.isdigit() for p in parts):
                        raise GpDataError(f"secure channel OID {oid} is not {_OID_SCP}<scp>.<i>")
                    scp.append((int(parts[0]), int(parts[1])))
            elif obj.tag == 0x65:
                fields["card_config"] = _oids_in(obj)
            elif obj.tag == 0x66:
                fields["chip_details"] = _oids_in(obj)
            else:
                other.append((obj.tag, obj.value))
        return cls(scp=tuple(scp), other=tuple(other), **fields)  # type: ignore[arg-type]


def _suffix(oids: tuple[str, ...], prefix: str) -> str | None:
    for oid in oids:
        if oid.startswith(prefix):
            return oid[len(prefix):]
    return oids[0] if oids else None


# -------------------------------------------------------------------------------------- key information

# GPCS 2.3.1 §11.1 (key type coding).
_KEY_TYPES: Mapping[int, str] = {
    0x80: "DES", 0x82: "3DES-CBC", 0x83: "DES-ECB", 0x84: "DES-CBC", 0x85: "TLS-PSK", 0x88: "AES",
    0x90: "HMAC-SHA1", 0x91: "HMAC-SHA1-160",
    0xA0: "RSA public e", 0xA1: "RSA public N", 0xA2: "RSA private N", 0xA3: "RSA private d",
    0xA4: "RSA CRT P", 0xA5: "RSA CRT Q", 0xA6: "RSA CRT PQ", 0xA7: "RSA CRT DP1", 0xA8: "RSA CRT DQ1",
    0xB0: "ECC public", 0xB1: "ECC private", 0xB2: "ECC field P", 0xB3: "ECC A", 0xB4: "ECC B", 0xB5: "ECC G",
    0xB6: "ECC N", 0xB7: "ECC k", 0xF0: "ECC key parameters reference", 0xFF: "extended format",
}
_EXTENDED = 0xFF  # GPCS 2.3.1 §11.3 (key information data): key type FF announces the extended key information format


def key_type_name(key_type: int) -> str:
    return _KEY_TYPES.get(key_type, f"key type {key_type:02X}")


@dataclass(frozen=True, slots=True)
class KeyComponent:
    key_type: int
    length: int  # bytes

    @property
    def name(self) -> str:
        return key_type_name(self.key_type)


@dataclass(frozen=True, slots=True)
class KeyInfoEntry:
    """One ``C0`` key information data object (GPCS 2.3.1 §11.3, key information data)."""

    key_id: int
    key_version: int
    components: tuple[KeyComponent, ...]
    extended: bool = False
    usage: bytes | None = None  # extended format only
    access: bytes | None = None  # extended format only

    @classmethod
    def parse(cls, value: bytes) -> KeyInfoEntry:
        """Decode the value of ``C0``: basic (id, version, (type, length)+) or extended (FF type len2 ...)."""
        if len(value) < 4:
            raise GpDataError(f"key information needs at least 4 bytes, got {len(value)}")
        key_id, version, pos = value[0], value[1], 2
        comps: list[KeyComponent] = []
        if value[pos] != _EXTENDED:
            if (len(value) - pos) % 2:
                raise GpDataError("basic key information must end with whole (type, length) pairs",
                                  offset=len(value) - 1)
            comps = [KeyComponent(value[i], value[i + 1]) for i in range(pos, len(value), 2)]
            return cls(key_id, version, tuple(comps))
        while pos < len(value) and value[pos] == _EXTENDED:
            if pos + 4 > len(value):
                raise GpDataError("extended key component truncated (FF, type, 2-byte length)", offset=pos)
            comps.append(KeyComponent(value[pos + 1], int.from_bytes(value[pos + 2:pos + 4], "big")))
            pos += 4
        usage = access = None
        if pos < len(value):
            usage, pos = _lv_field(value, pos, "key usage")
        if pos < len(value):
            access, pos = _lv_field(value, pos, "key access")
        if pos != len(value):
            raise GpDataError(f"{len(value) - pos} unexpected bytes after extended key information", offset=pos)
        return cls(key_id, version, tuple(comps), True, usage, access)


def _lv_field(value: bytes, pos: int, what: str) -> tuple[bytes, int]:
    n = value[pos]
    if pos + 1 + n > len(value):
        raise GpDataError(f"{what} announces {n} bytes, only {len(value) - pos - 1} remain", offset=pos)
    return value[pos + 1:pos + 1 + n], pos + 1 + n


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Key information template ``E0`` (GET DATA 00E0)."""

    entries: tuple[KeyInfoEntry, ...]

    @classmethod
    def parse(cls, data: bytes) -> KeyInfo:
        """Decode ``E0 L (C0 L ...)+`` or the bare sequence of ``C0`` objects."""
        objs = ber_decode(_as_bytes(data))
        if len(objs) == 1 and objs[0].tag == 0xE0:
            objs = list(objs[0].children)
        entries = []
        for obj in objs:
            if obj.tag != 0xC0:
                raise GpDataError(f"key information template holds tag {obj.tag:X}, expected C0")
            entries.append(KeyInfoEntry.parse(obj.value))
        return cls(tuple(entries))

    def versions(self) -> tuple[int, ...]:
        """Distinct key version numbers, in order of appearance."""
        return tuple(dict.fromkeys(e.key_version for e in self.entries))


# -------------------------------------------------------------------- life cycles, privileges, registry

# GPCS 2.3.1 §5.1.1 (card life cycle coding).
CARD_LIFE_CYCLE: Mapping[int, str] = {
    0x01: "OP_READY", 0x07: "INITIALIZED", 0x0F: "SECURED", 0x7F: "CARD_LOCKED", 0xFF: "TERMINATED"}
# GPCS 2.3.1 §5.3.1 (applications), §5.3.2 (security domains), §5.2 (executable load files).
_APP_STATES: Mapping[int, str] = {0x03: "INSTALLED", 0x07: "SELECTABLE"}
_SD_STATES: Mapping[int, str] = {0x03: "INSTALLED", 0x07: "SELECTABLE", 0x0F: "PERSONALIZED"}
LifeCycleKind = Literal["card", "isd", "app", "sd", "load-file"]


def life_cycle_name(kind: LifeCycleKind, value: int) -> str:
    """Name of a life-cycle byte for the card (= ISD), an application, a security domain or a load file."""
    if not 0 <= value <= 0xFF:
        raise GpDataError(f"life-cycle state must be a byte, got {value}")
    if kind in ("card", "isd"):
        return CARD_LIFE_CYCLE.get(value, f"UNKNOWN({value:02X})")
    if kind == "load-file":
        return "LOADED" if value == 0x01 else f"UNKNOWN({value:02X})"
    if kind not in ("app", "sd"):
        raise GpDataError(f"kind must be card, isd, app, sd or load-file, got {kind!r}")
    # GPCS 2.3.1 §5.3: b8 = 1 is LOCKED (the other bits keep the previous state).
    if value & 0x80:
        return "LOCKED"
    table = _SD_STATES if kind == "sd" else _APP_STATES
    if value in table:
        return table[value]
    if kind == "app" and value & 0x87 == 0x07:  # 0xxxx111: application-specific state
        return f"SELECTABLE+APP_SPECIFIC({value:02X})"
    return f"UNKNOWN({value:02X})"


# GPCS 2.3.1 §11.1 (privileges coding: three bytes, bit 8 first).
_PRIVILEGES: tuple[tuple[str, ...], ...] = (
    ("Security Domain", "DAP Verification", "Delegated Management", "Card Lock", "Card Terminate",
     "Card Reset", "CVM Management", "Mandated DAP Verification"),
    ("Trusted Path", "Authorized Management", "Token Verification", "Global Delete", "Global Lock",
     "Global Registry", "Final Application", "Global Service"),
    ("Receipt Generation", "Ciphered Load File Data Block", "Contactless Activation",
     "Contactless Self-Activation", "RFU b4", "RFU b3", "RFU b2", "RFU b1"),
)


def privileges_names(privileges: bytes) -> list[str]:
    """The names of the privilege bits set in 1 to 3 privilege bytes (GPCS 2.3.1 §11.1)."""
    raw = _as_bytes(privileges)
    if not 1 <= len(raw) <= 3:
        raise GpDataError(f"privileges are 1 to 3 bytes, got {len(raw)}")
    return [names[7 - bit] for byte, names in zip(raw, _PRIVILEGES, strict=False)
            for bit in range(7, -1, -1) if byte >> bit & 1]


RegistryKind = Literal["isd", "apps", "load-files", "load-files-modules"]


@dataclass(frozen=True, slots=True)
class GetStatusEntry:
    """One registry entry of a GET STATUS response (GPCS 2.3.1 §11.4)."""

    kind: str  # the GET STATUS subset it came from
    aid: bytes
    life_cycle: int
    privileges: bytes = b""
    associated_sd: bytes | None = None  # CC
    version: bytes | None = None  # CE (load file version)
    load_file_aid: bytes | None = None  # C4 (load file of an application)
    modules: tuple[bytes, ...] = ()  # 84 (executable module AIDs)
    implicit_selection: bytes | None = None  # CF
    extra: tuple[tuple[int, bytes], ...] = field(default=())

    @property
    def life_cycle_name(self) -> str:
        if self.kind == "isd":
            return life_cycle_name("card", self.life_cycle)
        if self.kind in ("load-files", "load-files-modules"):
            return life_cycle_name("load-file", self.life_cycle)
        is_sd = bool(self.privileges) and bool(self.privileges[0] & 0x80)
        return life_cycle_name("sd" if is_sd else "app", self.life_cycle)

    @property
    def privilege_names(self) -> list[str]:
        return privileges_names(self.privileges) if self.privileges else []

    @classmethod
    def from_tlv(cls, kind: str, e3: Tlv) -> GetStatusEntry:
        """Decode one ``E3`` GlobalPlatform registry data template."""
        if e3.tag != 0xE3:
            raise GpDataError(f"registry entry has tag {e3.tag:X}, expected E3")
        aid = lc = None
        fields: dict[str, object] = {}
        modules: list[bytes] = []
        extra: list[tuple[int, bytes]] = []
        for obj in e3.children:
            if obj.tag == 0x4F:
                aid = obj.value
            elif obj.tag == 0x9F70:
                if len(obj.value) < 1:
                    raise GpDataError("life cycle state (9F70) is empty")
                lc = obj.value[0]
            elif obj.tag == 0xC5:
                fields["privileges"] = obj.value
            elif obj.tag == 0xCC:
                fields["associated_sd"] = obj.value
            elif obj.tag == 0xCE:
                fields["version"] = obj.value
            elif obj.tag == 0xC4:
                fields["load_file_aid"] = obj.value
            elif obj.tag == 0x84:
                modules.append(obj.value)
            elif obj.tag == 0xCF:
                fields["implicit_selection"] = obj.value
            else:
                extra.append((obj.tag, obj.value))
        if aid is None or lc is None:
            raise GpDataError("registry entry (E3) lacks its AID (4F) or life cycle state (9F70)")
        return cls(kind, aid, lc, modules=tuple(modules), extra=tuple(extra), **fields)  # type: ignore[arg-type]


def parse_get_status(data: bytes, subset: RegistryKind, *, tag_list: bool = True) -> list[GetStatusEntry]:
    """Decode a GET STATUS response for ``subset`` in the tag-list (E3) or the legacy format.

    Legacy (GP 2.1.1): per entry length ‖ AID ‖ life cycle ‖ privileges (1 byte), and for
    ``load-files-modules`` a module count followed by length ‖ AID per module.
    """
    if subset not in ("isd", "apps", "load-files", "load-files-modules"):
        raise GpDataError(f"subset must be isd, apps, load-files or load-files-modules, got {subset!r}")
    raw = _as_bytes(data)
    if tag_list:
        return [GetStatusEntry.from_tlv(subset, obj) for obj in ber_decode(raw)]
    out: list[GetStatusEntry] = []
    pos = 0
    while pos < len(raw):
        aid, pos = _lv_field(raw, pos, "AID")
        if not aid:
            raise GpDataError("registry entry with an empty AID", offset=pos - 1)
        if pos + 2 > len(raw):
            raise GpDataError("registry entry truncated before life cycle and privileges", offset=pos)
        lc, priv = raw[pos], raw[pos + 1:pos + 2]
        pos += 2
        modules: list[bytes] = []
        if subset == "load-files-modules":
            if pos >= len(raw):
                raise GpDataError("load file entry truncated before its module count", offset=pos)
            count, pos = raw[pos], pos + 1
            for _ in range(count):
                if pos >= len(raw):
                    raise GpDataError("module list truncated", offset=pos)
                module, pos = _lv_field(raw, pos, "module AID")
                modules.append(module)
        out.append(GetStatusEntry(subset, aid, lc, priv, modules=tuple(modules)))
    return out


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise GpDataError(f"expected bytes, not {type(data).__name__}")

