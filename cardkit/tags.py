"""Names of BER-TLV data objects, for display and diagnostics.

Context-specific tags ('80'..'BF') and some application-class tags mean different things in different places:
'80' is the file size in an FCP, "response message template format 1" in EMV; '87' is the cryptogram in
secure messaging but the application priority in EMV. :data:`TAGS` holds one general name per tag; the
per-context dictionaries (:data:`FCP_TAGS`, :data:`GP_TAGS`, :data:`LDS_TAGS`, :data:`EMV_TAGS`,
:data:`SM_TAGS`, :data:`SA_TAGS`) hold the meaning inside that context and win over the general name in :func:`name`.

Sources: ISO/IEC 7816-4:2020 (§7.4 file control information, §6.3 interindustry templates, §10 secure
messaging), ISO/IEC 7816-6 (interindustry data elements), GlobalPlatform Card Specification 2.3.1 (GPCS)
§11 and Appendix H, ICAO Doc 9303 Part 10 (LDS), EMV Book 3 Annex A (data elements dictionary).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from cardkit.errors import CardkitError

__all__ = [
    "COMPACT_TAGS",
    "CONTEXTS",
    "EMV_TAGS",
    "FCP_TAGS",
    "GP_TAGS",
    "LDS_TAGS",
    "SA_TAGS",
    "SM_TAGS",
    "TAGS",
    "UnknownTagContextError",
    "check_context",
    "child_context",
    "explain_compact",
    "name",
]


class UnknownTagContextError(CardkitError, ValueError):
    """A tag context name that is not one of :data:`CONTEXTS`."""


# --------------------------------------------------------------------------------------------------
# File control parameters / information / management data — ISO 7816-4:2020 §7.4.3 (the data objects
# of the templates '62' FCP, '64' FMD, '6F' FCI).
_FCP: dict[int, str] = {
    0x62: "FCP template",
    0x64: "FMD template",
    0x6F: "FCI template",
    0x80: "Number of data bytes in the file (excluding structural information)",
    0x81: "Number of data bytes in the file (including structural information)",
    0x82: "File descriptor",
    0x83: "File identifier",
    0x84: "DF name",
    0x85: "Proprietary information (primitive)",
    0x86: "Security attribute (proprietary format)",
    0x87: "Identifier of an EF containing an extension of the FCI",
    0x88: "Short EF identifier",
    0x8A: "Life cycle status",
    0x8B: "Security attribute (referencing expanded format)",
    0x8C: "Security attribute (compact format)",
    0x8D: "Identifier of an EF containing security environment templates",
    0x8E: "Channel security attribute",
    0xA0: "Security attribute template for data objects",
    0xA1: "Security attribute template (proprietary format)",
    0xA2: "Template of short EF identifier / absolute path pairs",
    0xA5: "Proprietary information (constructed)",
    0xAB: "Security attribute template (expanded format)",
    0xAC: "Cryptographic mechanism identifier template",
}

# --------------------------------------------------------------------------------------------------
# Secure messaging data objects — ISO 7816-4:2020 §10.2 (basic SM data objects).
_SM: dict[int, str] = {
    # Even tag: not included in the checksum computation; odd tag: included (bit 1 of the tag).
    0x80: "SM: plain value not encoded in BER-TLV",
    0x81: "SM: plain value not encoded in BER-TLV (in MAC)",
    0x82: "SM: cryptogram (plain value in BER-TLV, including SM data objects)",
    0x83: "SM: cryptogram (plain value in BER-TLV, including SM data objects; in MAC)",
    0x84: "SM: cryptogram (plain value in BER-TLV, no SM data objects)",
    0x85: "SM: cryptogram (plain value in BER-TLV, no SM data objects; in MAC)",
    0x86: "SM: padding-content indicator and cryptogram (plain value not in BER-TLV)",
    0x87: "SM: padding-content indicator and cryptogram (plain value not in BER-TLV; in MAC)",
    0x8E: "SM: cryptographic checksum (MAC)",
    0x96: "SM: Le",
    0x97: "SM: Le (in MAC)",
    0x99: "SM: processing status (SW1-SW2, in MAC)",
}

# --------------------------------------------------------------------------------------------------
# Security attributes in expanded format (inside 'AB') — ISO 7816-4:2020 §7.4.3 (access mode data objects,
# security condition data objects) with the control reference templates of §10.3.1.
_SA: dict[int, str] = {
    0x80: "Access mode byte",
    0x83: "Key or PIN reference",
    0x90: "Security condition: always",
    0x95: "Usage qualifier",
    0x97: "Security condition: never",
    0x9E: "Security condition byte",
    0xA0: "Security condition: OR template",
    0xA4: "Authentication CRT",
    0xA7: "Security condition: NOT template",
    0xAF: "Security condition: AND template",
    0xB4: "Cryptographic checksum CRT",
    0xB6: "Digital signature CRT",
    0xB8: "Confidentiality CRT",
}

# --------------------------------------------------------------------------------------------------
# GlobalPlatform — GPCS 2.3.1 §11.3 (GET DATA), §11.4.3 (GET STATUS, Table 11-36),
# §11.3.3.1 (key information template), Appendix H.2 (card recognition data).
_GP: dict[int, str] = {
    0x06: "Object identifier",
    0x42: "Issuer identification number",
    0x45: "Card image number",
    0x4F: "AID",
    0x60: "Card management type and version (OID)",
    0x63: "Card identification scheme (OID)",
    0x64: "Secure channel protocol and implementation options (OID)",
    0x65: "Card configuration details",
    0x66: "Card data (top level) / card-chip details (inside 73)",
    0x67: "Issuer security domain trust point certificate information",
    0x68: "Issuer security domain certificate information",
    0x73: "Card recognition data",
    0x84: "Executable module AID",
    0x9F6E: "Application production life cycle data",
    0x9F70: "Life cycle state",
    0x9F7F: "Card production life cycle data (CPLC)",
    0x9F65: "Maximum length of data field in command message",
    0xC0: "Key information data",
    0xC1: "Sequence counter of the default key version number",
    0xC2: "Confirmation counter",
    0xC4: "Application's executable load file AID",
    0xC5: "Privileges",
    0xCC: "Associated security domain AID",
    0xCE: "Executable load file version number",
    0xCF: "Key diversification data / implicit selection parameter",
    0xE0: "Key information template",
    0xE3: "GlobalPlatform registry entry (GET STATUS)",
    0xFF21: "Extended card resources information",
}

# --------------------------------------------------------------------------------------------------
# ICAO Doc 9303 Part 10 (Logical Data Structure): EF.COM, data groups, EF.SOD, biometric templates
# (ISO/IEC 19785-3 CBEFF as profiled in Doc 9303 Part 10 §4.7).
_LDS: dict[int, str] = {
    0x02: "Number of instances",
    0x5C: "Tag list",
    0x5F01: "LDS version number",
    0x5F36: "Unicode version number",
    0x60: "EF.COM",
    0x61: "DG1 (machine readable zone)",
    0x5F1F: "MRZ data",
    0x75: "DG2 (encoded face)",
    0x63: "DG3 (encoded fingerprints)",
    0x76: "DG4 (encoded iris)",
    0x65: "DG5 (displayed portrait)",
    0x66: "DG6 (reserved)",
    0x67: "DG7 (displayed signature or mark)",
    0x68: "DG8 (data features)",
    0x69: "DG9 (structure features)",
    0x6A: "DG10 (substance features)",
    0x6B: "DG11 (additional personal details)",
    0x6C: "DG12 (additional document details)",
    0x6D: "DG13 (optional details)",
    0x6E: "DG14 (security options)",
    0x6F: "DG15 (active authentication public key)",
    0x70: "DG16 (persons to notify)",
    0x77: "EF.SOD (document security object)",
    0x7F61: "Biometric information group template",
    0x7F60: "Biometric information template",
    0xA1: "Biometric header template",
    0x80: "ICAO header version",
    0x81: "Biometric type",
    0x82: "Biometric subtype",
    0x83: "Creation date and time",
    0x85: "Validity period",
    0x86: "Creator of the biometric reference data",
    0x87: "Format owner",
    0x88: "Format type",
    0x5F2E: "Biometric data block",
    0x7F2E: "Biometric data block (enciphered)",
    0x5F0E: "Full name",
    0x5F0F: "Other names",
    0x5F10: "Personal number",
    0x5F11: "Place of birth",
    0x5F2B: "Date of birth (full)",
    0x5F42: "Permanent address",
    0x5F12: "Telephone",
    0x5F13: "Profession",
    0x5F14: "Title",
    0x5F15: "Personal summary",
    0x5F16: "Proof of citizenship",
    0x5F17: "Other valid travel document numbers",
    0x5F18: "Custody information",
    0x5F19: "Issuing authority",
    0x5F1A: "Other persons",
    0x5F1B: "Endorsements and observations",
    0x5F1C: "Tax / exit requirements",
    0x5F1D: "Image of document front",
    0x5F1E: "Image of document rear",
    0x5F26: "Date of issue",
    0x5F55: "Date and time of personalization",
    0x5F56: "Serial number of personalization system",
}

# --------------------------------------------------------------------------------------------------
# EMV 4.4 Book 3 Annex A (data elements dictionary) and Annex B (templates).
_EMV: dict[int, str] = {
    0x42: "Issuer identification number (IIN)",
    0x4F: "Application identifier (ADF name)",
    0x50: "Application label",
    0x57: "Track 2 equivalent data",
    0x5A: "Application primary account number (PAN)",
    0x5F20: "Cardholder name",
    0x5F24: "Application expiration date",
    0x5F25: "Application effective date",
    0x5F28: "Issuer country code",
    0x5F2A: "Transaction currency code",
    0x5F2D: "Language preference",
    0x5F30: "Service code",
    0x5F34: "Application PAN sequence number",
    0x5F36: "Transaction currency exponent",
    0x5F50: "Issuer URL",
    0x61: "Application template",
    0x6F: "FCI template",
    0x70: "READ RECORD response message template",
    0x71: "Issuer script template 1",
    0x72: "Issuer script template 2",
    0x73: "Directory discretionary template",
    0x77: "Response message template format 2",
    0x80: "Response message template format 1",
    0x82: "Application interchange profile (AIP)",
    0x83: "Command template",
    0x84: "DF name",
    0x86: "Issuer script command",
    0x87: "Application priority indicator",
    0x88: "Short file identifier (SFI)",
    0x89: "Authorisation code",
    0x8A: "Authorisation response code",
    0x8C: "Card risk management data object list 1 (CDOL1)",
    0x8D: "Card risk management data object list 2 (CDOL2)",
    0x8E: "Cardholder verification method (CVM) list",
    0x8F: "Certification authority public key index",
    0x90: "Issuer public key certificate",
    0x91: "Issuer authentication data",
    0x92: "Issuer public key remainder",
    0x93: "Signed static application data",
    0x94: "Application file locator (AFL)",
    0x95: "Terminal verification results (TVR)",
    0x9A: "Transaction date",
    0x9C: "Transaction type",
    0x9D: "Directory definition file (DDF) name",
    0xA5: "FCI proprietary template",
    0x9F02: "Amount, authorised (numeric)",
    0x9F03: "Amount, other (numeric)",
    0x9F05: "Application discretionary data",
    0x9F06: "Application identifier (terminal)",
    0x9F07: "Application usage control",
    0x9F08: "Application version number (card)",
    0x9F09: "Application version number (terminal)",
    0x9F0B: "Cardholder name extended",
    0x9F0D: "Issuer action code - default",
    0x9F0E: "Issuer action code - denial",
    0x9F0F: "Issuer action code - online",
    0x9F10: "Issuer application data",
    0x9F11: "Issuer code table index",
    0x9F12: "Application preferred name",
    0x9F13: "Last online application transaction counter (ATC) register",
    0x9F14: "Lower consecutive offline limit",
    0x9F17: "PIN try counter",
    0x9F1A: "Terminal country code",
    0x9F1F: "Track 1 discretionary data",
    0x9F20: "Track 2 discretionary data",
    0x9F21: "Transaction time",
    0x9F23: "Upper consecutive offline limit",
    0x9F26: "Application cryptogram",
    0x9F27: "Cryptogram information data",
    0x9F32: "Issuer public key exponent",
    0x9F33: "Terminal capabilities",
    0x9F34: "Cardholder verification method (CVM) results",
    0x9F35: "Terminal type",
    0x9F36: "Application transaction counter (ATC)",
    0x9F37: "Unpredictable number",
    0x9F38: "Processing options data object list (PDOL)",
    0x9F42: "Application currency code",
    0x9F44: "Application currency exponent",
    0x9F45: "Data authentication code",
    0x9F46: "ICC public key certificate",
    0x9F47: "ICC public key exponent",
    0x9F48: "ICC public key remainder",
    0x9F49: "Dynamic data authentication data object list (DDOL)",
    0x9F4A: "Static data authentication tag list",
    0x9F4B: "Signed dynamic application data",
    0x9F4C: "ICC dynamic number",
    0x9F4D: "Log entry",
    0x9F4E: "Merchant name and location",
    0x9F4F: "Log format",
    0xBF0C: "FCI issuer discretionary data",
}

# --------------------------------------------------------------------------------------------------
# General names: ISO 7816-4:2020 §6.3 and ISO/IEC 7816-6 interindustry data objects, then the
# context-specific tags with their most common (ISO 7816-4 FCP / SM) meaning.
_GENERAL: dict[int, str] = {
    # Universal class (X.680 / X.690)
    0x01: "Boolean",
    0x02: "Integer",
    0x03: "Bit string",
    0x04: "Octet string",
    0x05: "Null",
    0x06: "Object identifier",
    0x0C: "UTF8String",
    0x13: "PrintableString",
    0x30: "Sequence",
    0x31: "Set",
    # ISO 7816-4:2020 §6.3 / ISO 7816-6 interindustry data objects (application class)
    0x41: "Country code and optional national data",
    0x42: "Issuer identification number",
    0x43: "Card service data",
    0x44: "Initial access data",
    0x45: "Card issuer's data",
    0x46: "Pre-issuing data",
    0x47: "Card capabilities",
    0x48: "Status information",
    0x4D: "Extended header list",
    0x4F: "Application identifier (AID)",
    0x50: "Application label",
    0x51: "Path",
    0x52: "Command APDU",
    0x53: "Discretionary data",
    0x56: "Track 1 (card)",
    0x57: "Track 2 (card)",
    0x58: "Track 3 (card)",
    0x59: "Card expiration date",
    0x5A: "Primary account number (PAN)",
    0x5B: "Name (free text)",
    0x5C: "Tag list",
    0x5D: "Header list",
    0x5E: "Login data",
    0x5F20: "Cardholder name",
    0x5F24: "Expiration date",
    0x5F25: "Effective date",
    0x5F28: "Issuer country code",
    0x5F29: "Interchange profile",
    0x5F2C: "Cardholder nationality",
    0x5F2D: "Language preferences",
    0x5F2E: "Cardholder biometric data",
    0x5F35: "Sex",
    0x5F37: "Signature (static internal authentication)",
    0x5F50: "Uniform resource locator",
    0x60: "Cardholder biometric data template / EF.COM",
    0x61: "Application template",
    0x62: "FCP template",
    0x63: "Wrapper",
    0x64: "FMD template",
    0x65: "Cardholder related data",
    0x66: "Card data",
    0x67: "Authentication data",
    0x68: "Special user requirements",
    0x6A: "Login template",
    0x6D: "Reserved for national use",
    0x6E: "Application related data",
    0x6F: "FCI template",
    0x70: "Record template",
    0x71: "Issuer script template 1",
    0x72: "Issuer script template 2",
    0x73: "Discretionary data objects template",
    0x75: "DG2 (encoded face)",
    0x77: "Response message template / EF.SOD",
    0x7D: "Secure messaging template",
    0x7E: "Interindustry template for nesting",
    0x7F21: "Cardholder certificate",
    0x7F2E: "Biometric data block (enciphered)",
    0x7F49: "Public key template",
    0x7F4C: "Certificate holder authorisation template",
    0x7F4E: "Certificate body",
    0x7F60: "Biometric information template",
    0x7F61: "Biometric information group template",
    0x90: "Issuer public key certificate",
    0x92: "Issuer public key remainder",
    0x93: "Signed static application data",
    0x94: "Application file locator (AFL)",
    0x96: "SM: Le",
    0x97: "SM: Le (in MAC)",
    0x99: "SM: processing status (SW1-SW2, in MAC)",
    0x9F7F: "Card production life cycle data (CPLC)",
    0x9F6E: "Application production life cycle data",
    0x9F70: "Life cycle state",
    0xBF0C: "FCI issuer discretionary data",
    0xC0: "Key information data",
    0xC5: "Privileges",
    0xCC: "Associated security domain AID",
    0xCE: "Executable load file version number",
    0xCF: "Key diversification data",
    0xE0: "Key information template",
    0xE3: "GlobalPlatform registry entry",
}
# Context-specific tags default to their ISO 7816-4 FCP meaning; EMV-only 9Fxx tags keep EMV names.
_GENERAL.update({k: v for k, v in _FCP.items() if k not in _GENERAL})
_GENERAL.update({k: v for k, v in _EMV.items() if k not in _GENERAL})
_GENERAL.update({k: v for k, v in _LDS.items() if k not in _GENERAL and k > 0xFF})
_GENERAL.update({k: v for k, v in _GP.items() if k not in _GENERAL})

TAGS: Mapping[int, str] = MappingProxyType(_GENERAL)
FCP_TAGS: Mapping[int, str] = MappingProxyType(_FCP)
GP_TAGS: Mapping[int, str] = MappingProxyType(_GP)
LDS_TAGS: Mapping[int, str] = MappingProxyType(_LDS)
EMV_TAGS: Mapping[int, str] = MappingProxyType(_EMV)
SM_TAGS: Mapping[int, str] = MappingProxyType(_SM)
SA_TAGS: Mapping[int, str] = MappingProxyType(_SA)

CONTEXTS: Mapping[str, Mapping[int, str]] = MappingProxyType({
    "fcp": FCP_TAGS,
    "gp": GP_TAGS,
    "lds": LDS_TAGS,
    "emv": EMV_TAGS,
    "sm": SM_TAGS,
    "sa": SA_TAGS,
})

# Templates that set the context of what they contain (used by cardkit.tlv.pretty).
_CHILD_CONTEXT: Mapping[int, str] = MappingProxyType({
    0x62: "fcp", 0x64: "fcp", 0x6F: "fcp",              # ISO 7816-4:2020 §7.4.3
    0xA5: "emv", 0x70: "emv", 0x77: "emv", 0xBF0C: "emv",  # EMV Book 3 Annex B / Book 1 §11.3.4
    0x61: "emv",                                        # application template (ISO 7816-4 EF.DIR, EMV PSE)
    0x66: "gp", 0xE0: "gp", 0xE3: "gp",                 # GPCS 2.3.1 H.2, §11.3.3.1, §11.4.3
    0x60: "lds", 0x75: "lds", 0x7F61: "lds", 0x7F60: "lds",  # ICAO 9303-10 EF.COM, DG2, BIT group
    0x7D: "sm",                                         # ISO 7816-4:2020 §10.2 SM template
    0xAB: "sa",                                         # ISO 7816-4:2020 §7.4.3 expanded format
})
# In these contexts a template keeps the current context instead of switching (EMV FCI '6F' holds
# EMV objects; an LDS data group holds LDS objects; GP card data '66' holds '73' recognition data).
_KEEP: Mapping[str, frozenset[int]] = MappingProxyType({
    "emv": frozenset({0x6F, 0x61}),
    "lds": frozenset({0x61, 0x6F, 0x70, 0x77}),
    "gp": frozenset({0x73, 0x60, 0x64}),
})


def check_context(context: str) -> str:
    """Return the normalised context name, or raise UnknownTagContextError."""
    key = context.lower()
    if key not in CONTEXTS:
        raise UnknownTagContextError(f"unknown tag context {context!r} (known: {', '.join(CONTEXTS)})")
    return key


def name(tag: int, context: str | None = None) -> str | None:
    """The name of ``tag``: the meaning inside ``context`` when it has one there, else the general name."""
    if context is not None:
        specific = CONTEXTS[check_context(context)].get(tag)
        if specific is not None:
            return specific
    return TAGS.get(tag)


def child_context(tag: int, context: str | None) -> str | None:
    """The context that applies inside the constructed object ``tag`` found in ``context``."""
    if context is not None and tag in _KEEP.get(context.lower(), frozenset()):
        return context
    return _CHILD_CONTEXT.get(tag, context)


# ==================================================================================================
# COMPACT-TLV data objects of the historical bytes (ISO 7816-4:2020 §8.1.1): names and meaning.

# ISO 7816-4:2020 §8.1.1.2 / §8.1.1.3: COMPACT-TLV tag numbers in the historical bytes.
COMPACT_TAGS: Mapping[int, str] = MappingProxyType({
    0x1: "country code", 0x2: "issuer identification number", 0x3: "card service data",
    0x4: "initial access data", 0x5: "card issuer's data", 0x6: "pre-issuing data",
    0x7: "card capabilities", 0x8: "status indicator", 0xF: "application identifier",
})
# ISO 7816-4:2020 §8.1.1.2.3: card service data byte.
_SERVICE_BITS = (
    (0x80, "application selection by full DF name"), (0x40, "application selection by partial DF name"),
    (0x20, "BER-TLV data objects in EF.DIR"), (0x10, "BER-TLV data objects in EF.ATR"),
)
_SERVICE_ACCESS = {0b100: "READ BINARY", 0b000: "READ RECORD(S)", 0b010: "GET DATA"}
# ISO 7816-4:2020 §8.1.1.2.7 card capabilities, first software function table (selection methods).
_SELECTION_BITS = (
    (0x80, "DF selection by full DF name"), (0x40, "DF selection by partial DF name"),
    (0x20, "DF selection by path"), (0x10, "DF selection by file identifier"),
    (0x08, "implicit DF selection"), (0x04, "short EF identifier"),
    (0x02, "record number"), (0x01, "record identifier"),
)
# ISO 7816-4:2020 §8.1.1.2.7 card capabilities, second table (data coding byte): write behaviour b7-b6.
_WRITE_BEHAVIOUR = {0: "one-time write", 1: "proprietary", 2: "write OR", 3: "write AND"}
# ISO 7816-4:2020 §7.4 (life cycle status byte, LCS).
_LCS = {0x00: "no information given", 0x01: "creation", 0x03: "initialisation",
        0x05: "operational (activated)", 0x07: "operational (activated)",
        0x04: "operational (deactivated)", 0x06: "operational (deactivated)"}


def _bits(value: int, table: Iterable[tuple[int, str]]) -> str:
    return ", ".join(label for bit, label in table if value & bit) or "none"


def explain_compact(tag: int, value: bytes) -> list[str]:
    """Meaning of the interindustry COMPACT-TLV objects (ISO 7816-4:2020 §8.1.1.2, §8.1.1.3)."""
    if tag == 0x3 and len(value) == 1:
        v = value[0]
        access = _SERVICE_ACCESS.get((v >> 1) & 0x07, "reserved")
        return [f"services: {_bits(v, _SERVICE_BITS)}; EF.DIR/EF.ATR read by {access}; "
                + ("card without MF" if v & 0x01 else "card with MF")]
    if tag == 0x7 and value:
        out = [f"selection methods: {_bits(value[0], _SELECTION_BITS)}"]
        if len(value) >= 2:
            d = value[1]
            out.append(f"data coding: write behaviour {_WRITE_BEHAVIOUR[(d >> 5) & 0x03]}, 'FF' as first tag byte "
                       f"{'valid' if d & 0x10 else 'invalid'}, data unit {d & 0x0F} quartet(s)"
                       + (", EFs of TLV structure supported" if d & 0x80 else ""))
        if len(value) >= 3:
            c = value[2]
            assign = {0: "no logical channels", 1: "logical channels assigned by the interface device",
                      2: "logical channels assigned by the card", 3: "logical channels assigned by card or IFD"}
            count = "8 or more" if c & 0x07 == 0x07 else str((c & 0x07) + 1)
            feats = _bits(c, ((0x80, "command chaining"), (0x40, "extended Lc and Le"),
                              (0x20, "extended length information in EF.ATR/INFO")))
            feats = "no command chaining, short Lc and Le only" if feats == "none" else feats
            out.append(f"{feats}; {assign[(c >> 3) & 0x03]}, at most {count} logical channel(s)")
        return out
    if tag == 0x8 and len(value) in (1, 2, 3):
        parts = []
        if len(value) != 2:
            lcs = value[0]
            parts.append(f"LCS {lcs:02X} ({_lcs_text(lcs)})")
        if len(value) >= 2:
            parts.append(f"SW1-SW2 {value[-2:].hex().upper()}")
        return [", ".join(parts)]
    if tag == 0x1 and len(value) >= 2:
        return [f"country code (ISO 3166-1 numeric) {value[:2].hex().upper()[:3]}"]
    return []


def _lcs_text(lcs: int) -> str:
    if lcs in _LCS:
        return _LCS[lcs]
    if 0x0C <= lcs <= 0x0F:
        return "termination"
    return "proprietary" if lcs >= 0x10 else "reserved"
