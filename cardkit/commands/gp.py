"""GlobalPlatform card-management command builders (GPCS 2.3.1 §11, Amendment D for SCP03).

Pure functions returning :class:`~cardkit.apdu.CommandApdu` with the GlobalPlatform class byte ``80``.
Builders do not add secure-messaging MACs or encryption: the secure-channel processor of the session wraps
them (and turns CLA 80 into 84). :func:`external_authenticate_gp` is built with CLA 84 because that command
is always MACed. Argument errors raise :class:`~cardkit.errors.ApduFormatError`.
"""

from __future__ import annotations

import logging
from typing import Literal

from cardkit.apdu import LE_MAX_SHORT, CommandApdu
from cardkit.errors import ApduFormatError, ParseError
from cardkit.tlv import ber_encode, encode_length

logger = logging.getLogger(__name__)

__all__ = [
    "CLA_GP", "CLA_GP_SECURE", "DEFAULT_ISD_AID", "LEGACY_ISD_AID", "TAG_CARD_DATA", "TAG_CIN", "TAG_CPLC",
    "TAG_IIN", "TAG_KEY_INFO", "TAG_SEQUENCE_COUNTER", "DgiError", "delete", "dgi", "external_authenticate_gp",
    "get_data_gp", "get_status", "initialize_update", "install_for_install", "install_for_load",
    "install_for_make_selectable", "install_for_personalization", "load", "load_blocks", "parse_dgis", "put_key",
    "select_isd", "set_status", "store_data", "store_data_p1",
]


class DgiError(ParseError):
    """Data Grouping Identifier data that is not well formed (EMV CPS, GPCS 2.3.1 §11.11)."""


# GPCS 2.3.1 §11.1 (class byte coding): 80 (no secure messaging indicated), 84 (secure messaging, C-MAC).
CLA_GP = 0x80
CLA_GP_SECURE = 0x84
# GPCS 2.3.1 (GlobalPlatform RID A000000151): the default Issuer Security Domain AID.
DEFAULT_ISD_AID = bytes.fromhex("A000000151000000")
# Open Platform 2.0.1' / Visa: the card manager AID still found on older GP 2.1.1 cards.
LEGACY_ISD_AID = bytes.fromhex("A000000003000000")

# GPCS 2.3.1 §11.3 (GET DATA) and §H (card recognition data): data objects of the security domain.
TAG_IIN = 0x42  # Issuer Identification Number
TAG_CIN = 0x45  # Card Image Number
TAG_CARD_DATA = 0x66  # Card Data (card recognition data)
TAG_SEQUENCE_COUNTER = 0xC1  # Sequence Counter of the default Key Version Number
TAG_KEY_INFO = 0xE0  # Key Information Template
TAG_CPLC = 0x9F7F  # Card Production Life Cycle data (GP 2.1.1 / Visa GP CPLC)

# GPCS 2.3.1 §11.4.2 (GET STATUS P1): the registry subset.
StatusSubset = Literal["isd", "apps", "load-files", "load-files-modules"]
_GET_STATUS_P1: dict[str, int] = {"isd": 0x80, "apps": 0x40, "load-files": 0x20, "load-files-modules": 0x10}
# GPCS 2.3.1 §11.10.2 (SET STATUS P1).
SetStatusSubset = Literal["isd", "app", "sd-and-apps"]
_SET_STATUS_P1: dict[str, int] = {"isd": 0x80, "app": 0x40, "sd-and-apps": 0x60}
# GPCS 2.3.1 §5.1.1: card life-cycle states settable through SET STATUS (INITIALIZED, SECURED, CARD_LOCKED,
# TERMINATED; OP_READY is never set).
_CARD_STATES = {0x07: "INITIALIZED", 0x0F: "SECURED", 0x7F: "CARD_LOCKED", 0xFF: "TERMINATED"}
# GPCS 2.3.1 §11.5.2 (INSTALL P1): b2 load, b3 install, b4 make selectable, b6 personalization.
_INSTALL_LOAD, _INSTALL_INSTALL, _INSTALL_SELECTABLE, _INSTALL_PERSO = 0x02, 0x04, 0x08, 0x20
# GPCS 2.3 Table 11-89 (STORE DATA P1).
StoreStructure = Literal["none", "dgi", "ber-tlv"]
StoreEncryption = Literal["none", "app", "encrypted"]
_STORE_LAST = 0x80  # b8
_STORE_ENCRYPTION: dict[str, int] = {"none": 0x00, "app": 0x20, "encrypted": 0x60}  # b7-b6: 00, 01, 11
_STORE_STRUCTURE: dict[str, int] = {"none": 0x00, "dgi": 0x08, "ber-tlv": 0x10}  # b5-b4: 00, 01, 10
_STORE_RESPONSE = 0x01  # b1
# GPCS 2.3.1 Appendix E (SCP02) / Amendment D §7 (SCP03): EXTERNAL AUTHENTICATE P1 security level bits.
_LEVEL_C_MAC, _LEVEL_C_DEC, _LEVEL_R_MAC, _LEVEL_R_ENC = 0x01, 0x02, 0x10, 0x20
# EMV CPS (DGI format) / GPCS 2.3 §11.11: a DGI length is one byte 00..FE, or FF followed by two bytes.
_DGI_LONG = 0xFF


def _int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApduFormatError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ApduFormatError(f"{name} must be {lo:#04x}..{hi:#04x}, got {value:#x}")
    return value


def _bytes(name: str, value: object, lo: int = 0, hi: int = 65535) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise ApduFormatError(f"{name} must be bytes, not {type(value).__name__}")
    if not lo <= len(value) <= hi:
        raise ApduFormatError(f"{name} must be {lo}..{hi} bytes, got {len(value)}")
    return bytes(value)


def _aid(value: object, name: str = "AID") -> bytes:
    # GPCS 2.3.1 §11.1 / ISO 7816-5: an AID is 5..16 bytes.
    return _bytes(name, value, 5, 16)


def _lv(value: bytes) -> bytes:
    """Length (one byte) ‖ value, as in the INSTALL data fields (GPCS 2.3.1 §11.5)."""
    if len(value) > 0xFF:
        raise ApduFormatError(f"an INSTALL field of {len(value)} bytes does not fit a one-byte length")
    return bytes((len(value),)) + value


def _privileges(value: object) -> bytes:
    # GPCS 2.3.1 §11.1 (privileges coding): privileges are 1 byte (GP 2.1.1) or 3 bytes.
    raw = _bytes("privileges", value, 1, 3)
    if len(raw) == 2:
        raise ApduFormatError("privileges must be 1 or 3 bytes (GPCS 2.3.1 §11.1), got 2")
    return raw


# ----------------------------------------------------------------------------------- selection and SCP


def select_isd(aid: bytes | None = None) -> CommandApdu:
    """SELECT the Issuer Security Domain by AID (GPCS 2.3.1 §11.9); ``None`` sends an empty AID, which
    selects the ISD (or default application) on GlobalPlatform cards."""
    data = b"" if aid is None else _aid(aid)
    return CommandApdu(0x00, 0xA4, 0x04, 0x00, data, LE_MAX_SHORT, name="SELECT")


def initialize_update(host_challenge: bytes, key_version: int = 0, key_id: int = 0) -> CommandApdu:
    """INITIALIZE UPDATE (GPCS 2.3.1 Appendix E; Amendment D §7): P1 key version (00 = first available),
    P2 key identifier, data = host challenge (8 bytes; 16 for SCP03 in S16 mode)."""
    challenge = _bytes("host challenge", host_challenge, 8, 16)
    if len(challenge) not in (8, 16):
        raise ApduFormatError(f"host challenge must be 8 or 16 bytes, got {len(challenge)}")
    return CommandApdu(CLA_GP, 0x50, _int("key version", key_version, 0, 0x7F), _int("key id", key_id, 0, 0x7F),
                       challenge, LE_MAX_SHORT, name="INITIALIZE UPDATE")


def external_authenticate_gp(host_cryptogram: bytes, level: int) -> CommandApdu:
    """EXTERNAL AUTHENTICATE (GPCS 2.3.1 Appendix E; Amendment D §7), CLA 84, P1 = security level.

    The security level combines C-MAC 01, C-DECRYPTION 02, R-MAC 10, R-ENCRYPTION 20 (00, 01, 03, 11, 13,
    33 ...); C-DECRYPTION needs C-MAC and R-ENCRYPTION needs R-MAC and C-DECRYPTION. The C-MAC is appended by
    the secure channel.
    """
    crypto = _bytes("host cryptogram", host_cryptogram, 8, 16)
    if len(crypto) not in (8, 16):
        raise ApduFormatError(f"host cryptogram must be 8 or 16 bytes, got {len(crypto)}")
    lvl = _int("security level", level, 0, 0xFF)
    if lvl & ~(_LEVEL_C_MAC | _LEVEL_C_DEC | _LEVEL_R_MAC | _LEVEL_R_ENC):
        raise ApduFormatError(f"security level {lvl:02X} has bits other than C-MAC 01, C-DEC 02, R-MAC 10, R-ENC 20")
    if lvl & _LEVEL_C_DEC and not lvl & _LEVEL_C_MAC:
        raise ApduFormatError(f"security level {lvl:02X}: C-DECRYPTION requires C-MAC")
    if lvl & _LEVEL_R_ENC and not (lvl & _LEVEL_R_MAC and lvl & _LEVEL_C_DEC):
        raise ApduFormatError(f"security level {lvl:02X}: R-ENCRYPTION requires R-MAC and C-DECRYPTION")
    return CommandApdu(CLA_GP_SECURE, 0x82, lvl, 0x00, crypto, name="EXTERNAL AUTHENTICATE", sensitive=True)


# ------------------------------------------------------------------------------------------- registry


def get_status(subset: StatusSubset, *, next: bool = False, tag_list: bool = True,
               aid_prefix: bytes = b"") -> CommandApdu:
    """GET STATUS (GPCS 2.3.1 §11.4): P1 = subset, P2 b2 = tag-list (E3) format, b1 = next occurrence.

    The search criterion is ``4F`` with ``aid_prefix`` (empty matches every entry). Continue with
    ``next=True`` while the card answers 6310.
    """
    if subset not in _GET_STATUS_P1:
        raise ApduFormatError(f"subset must be one of {sorted(_GET_STATUS_P1)}, got {subset!r}")
    p2 = (0x02 if tag_list else 0x00) | (0x01 if next else 0x00)
    criteria = ber_encode(0x4F, _bytes("AID prefix", aid_prefix, 0, 16))
    return CommandApdu(CLA_GP, 0xF2, _GET_STATUS_P1[subset], p2, criteria, LE_MAX_SHORT, name="GET STATUS")


def set_status(subset: SetStatusSubset, state: int, aid: bytes | None = None) -> CommandApdu:
    """SET STATUS (GPCS 2.3.1 §11.10): P1 = subset, P2 = new state, data = target AID.

    For the ISD (card life cycle) the state must be INITIALIZED 07, SECURED 0F, CARD_LOCKED 7F or
    TERMINATED FF; applications and security domains need their AID.
    """
    if subset not in _SET_STATUS_P1:
        raise ApduFormatError(f"subset must be one of {sorted(_SET_STATUS_P1)}, got {subset!r}")
    st = _int("state", state, 0, 0xFF)
    if subset == "isd":
        if st not in _CARD_STATES:
            names = ", ".join(f"{k:02X} {v}" for k, v in _CARD_STATES.items())
            raise ApduFormatError(f"card life-cycle state must be one of {names}, got {st:02X}")
        data = b"" if aid is None else _aid(aid)
    else:
        if aid is None:
            raise ApduFormatError(f"SET STATUS for {subset} needs the AID of the target")
        data = _aid(aid)
    return CommandApdu(CLA_GP, 0xF0, _SET_STATUS_P1[subset], st, data, name="SET STATUS")


# ------------------------------------------------------------------------------------------------ keys


def put_key(key_version: int, key_id: int, data: bytes, *, replace_version: int | None = None,
            multiple: bool = True, more: bool = False) -> CommandApdu:
    """PUT KEY (GPCS 2.3.1 §11.8): data = new key version ‖ key data fields (type, length, encrypted key, KCV).

    P1 = version to replace (00 = add a new key set) with b8 = more PUT KEY commands follow; P2 = first key
    identifier with b8 = several keys in this command.
    """
    kv = _int("key version", key_version, 1, 0x7F)
    kid = _int("key id", key_id, 0, 0x7F)
    old = 0 if replace_version is None else _int("replaced key version", replace_version, 1, 0x7F)
    body = _bytes("key data", data, 1, 254)
    return CommandApdu(CLA_GP, 0xD8, old | (0x80 if more else 0), kid | (0x80 if multiple else 0),
                       bytes((kv,)) + body, LE_MAX_SHORT, name="PUT KEY", sensitive=True)


# ---------------------------------------------------------------------------------------- STORE DATA


def store_data_p1(*, last: bool, structure: StoreStructure = "none", encryption: StoreEncryption = "none",
                  response: bool = False) -> int:
    """STORE DATA P1 (GPCS 2.3 Table 11-89): b8 last block, b7-b6 encryption, b5-b4 structure, b1 response."""
    if structure not in _STORE_STRUCTURE:
        raise ApduFormatError(f"structure must be one of {sorted(_STORE_STRUCTURE)}, got {structure!r}")
    if encryption not in _STORE_ENCRYPTION:
        raise ApduFormatError(f"encryption must be one of {sorted(_STORE_ENCRYPTION)}, got {encryption!r}")
    return ((_STORE_LAST if last else 0) | _STORE_ENCRYPTION[encryption] | _STORE_STRUCTURE[structure]
            | (_STORE_RESPONSE if response else 0))


def store_data(block: int, data: bytes, *, last: bool, structure: StoreStructure = "none",
               encryption: StoreEncryption = "none", response: bool = False) -> CommandApdu:
    """STORE DATA (GPCS 2.3.1 §11.11): P1 from :func:`store_data_p1`, P2 = block number 00..FF.

    Marked sensitive: personalization data carries keys, PINs and cardholder data.
    """
    p1 = store_data_p1(last=last, structure=structure, encryption=encryption, response=response)
    return CommandApdu(CLA_GP, 0xE2, p1, _int("block number", block, 0, 0xFF), _bytes("data", data, 1),
                       LE_MAX_SHORT if response else None, name="STORE DATA", sensitive=True)


def dgi(tag: int, data: bytes) -> bytes:
    """One DGI: tag (2 bytes) ‖ length (1 byte 00..FE, or FF + 2 bytes) ‖ data (EMV CPS)."""
    t = _int("DGI", tag, 0, 0xFFFF)
    value = _bytes("DGI data", data)
    n = len(value)
    length = bytes((n,)) if n < _DGI_LONG else bytes((_DGI_LONG,)) + n.to_bytes(2, "big")
    return t.to_bytes(2, "big") + length + value


def parse_dgis(data: bytes) -> list[tuple[int, bytes]]:
    """Split concatenated DGIs into ``(tag, data)`` pairs; raise :class:`DgiError` when truncated."""
    if not isinstance(data, bytes | bytearray):
        raise DgiError(f"expected bytes, not {type(data).__name__}")
    raw = bytes(data)
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(raw):
        if pos + 3 > len(raw):
            raise DgiError(f"truncated DGI header ({len(raw) - pos} bytes left, 3 needed)", offset=pos)
        tag = int.from_bytes(raw[pos:pos + 2], "big")
        n, head = raw[pos + 2], 3
        if n == _DGI_LONG:
            if pos + 5 > len(raw):
                raise DgiError(f"DGI {tag:04X}: truncated 3-byte length", offset=pos + 2)
            n, head = int.from_bytes(raw[pos + 3:pos + 5], "big"), 5
        start = pos + head
        if start + n > len(raw):
            raise DgiError(f"DGI {tag:04X} announces {n} bytes, only {len(raw) - start} remain", offset=pos)
        out.append((tag, raw[start:start + n]))
        pos = start + n
    return out


# ------------------------------------------------------------------------------------ INSTALL and LOAD


def _install(p1: int, data: bytes) -> CommandApdu:
    return CommandApdu(CLA_GP, 0xE6, p1, 0x00, data, LE_MAX_SHORT, name="INSTALL")


def install_for_load(load_file_aid: bytes, *, sd_aid: bytes | None = None, load_file_hash: bytes = b"",
                     params: bytes = b"", token: bytes = b"") -> CommandApdu:
    """INSTALL [for load] (GPCS 2.3.1 §11.5): load file AID, SD AID, hash, load parameters, token."""
    data = (_lv(_aid(load_file_aid, "load file AID")) + _lv(b"" if sd_aid is None else _aid(sd_aid, "SD AID"))
            + _lv(_bytes("load file hash", load_file_hash, 0, 64)) + _lv(_bytes("load parameters", params, 0, 255))
            + _lv(_bytes("token", token, 0, 255)))
    return _install(_INSTALL_LOAD, data)


def install_for_install(load_file_aid: bytes, module_aid: bytes, app_aid: bytes | None = None, *,
                        privileges: bytes = b"\x00", app_params: bytes = b"", system_params: bytes = b"",
                        token: bytes = b"", make_selectable: bool = True) -> CommandApdu:
    """INSTALL [for install (and make selectable)] (GPCS 2.3.1 §11.5), P1 0C (or 04).

    Install parameters are ``C9`` (application-specific ``app_params``, always present) followed by any
    ``system_params`` objects (EF, C7, C8 ...). ``app_aid`` defaults to the module AID.
    """
    install_params = ber_encode(0xC9, _bytes("application parameters", app_params, 0, 253))
    install_params += _bytes("system parameters", system_params, 0, 255)
    data = (_lv(_aid(load_file_aid, "load file AID")) + _lv(_aid(module_aid, "module AID"))
            + _lv(_aid(module_aid if app_aid is None else app_aid, "application AID")) + _lv(_privileges(privileges))
            + _lv(install_params) + _lv(_bytes("token", token, 0, 255)))
    return _install(_INSTALL_INSTALL | (_INSTALL_SELECTABLE if make_selectable else 0), data)


def install_for_make_selectable(app_aid: bytes, *, privileges: bytes = b"\x00", token: bytes = b"") -> CommandApdu:
    """INSTALL [for make selectable] (GPCS 2.3.1 §11.5): 00 00 ‖ LV(AID) ‖ LV(privileges) ‖ 00 ‖ LV(token)."""
    data = (b"\x00\x00" + _lv(_aid(app_aid, "application AID")) + _lv(_privileges(privileges)) + b"\x00"
            + _lv(_bytes("token", token, 0, 255)))
    return _install(_INSTALL_SELECTABLE, data)


def install_for_personalization(aid: bytes) -> CommandApdu:
    """INSTALL [for personalization] (GPCS 2.3.1 §11.5): 00 00 ‖ LV(AID) ‖ 00 00 00; STORE DATA follows."""
    return _install(_INSTALL_PERSO, b"\x00\x00" + _lv(_aid(aid, "application AID")) + b"\x00\x00\x00")


def load(block: int, data: bytes, *, last: bool) -> CommandApdu:
    """LOAD (GPCS 2.3.1 §11.6): P1 80 on the last block, 00 otherwise; P2 = block number 00..FF."""
    return CommandApdu(CLA_GP, 0xE8, 0x80 if last else 0x00, _int("block number", block, 0, 0xFF),
                       _bytes("load data", data, 1, 255), LE_MAX_SHORT, name="LOAD")


def load_blocks(load_file: bytes, *, block_size: int = 239) -> list[CommandApdu]:
    """All LOAD commands for a load file: ``C4`` ‖ length ‖ load file, cut in blocks (GPCS 2.3.1 §11.6).

    The default block size leaves room for a C-MAC and encryption padding inside a short APDU.
    """
    size = _int("block size", block_size, 1, 255)
    body = _bytes("load file", load_file, 1, 0xFFFFFF)
    stream = b"\xc4" + encode_length(len(body)) + body
    chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
    if len(chunks) > 256:
        raise ApduFormatError(f"load file needs {len(chunks)} blocks; LOAD numbers at most 256 (P2 00..FF)")
    return [load(i, c, last=i == len(chunks) - 1) for i, c in enumerate(chunks)]


def delete(aid: bytes, *, related: bool = False) -> CommandApdu:
    """DELETE (GPCS 2.3.1 §11.2): data = 4F ‖ AID; P2 80 also deletes related objects (the load file's apps)."""
    return CommandApdu(CLA_GP, 0xE4, 0x00, 0x80 if related else 0x00, ber_encode(0x4F, _aid(aid)), LE_MAX_SHORT,
                       name="DELETE")


def get_data_gp(tag: int) -> CommandApdu:
    """GET DATA with CLA 80 (GPCS 2.3.1 §11.3): e.g. :data:`TAG_CPLC`, :data:`TAG_CARD_DATA`, :data:`TAG_KEY_INFO`."""
    t = _int("tag", tag, 0x01, 0xFFFF)
    return CommandApdu(CLA_GP, 0xCA, t >> 8, t & 0xFF, le=LE_MAX_SHORT, name="GET DATA")
