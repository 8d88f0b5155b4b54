"""What a card diagnosis (:mod:`cardkit.apps.diagnose`) knows and how it says it.

The applications it recognises by AID (:data:`KNOWN_APPLICATIONS`, with the profile describing each and the FIDs
probed when none does), access rules and status words in words (:func:`explain_rule`, :func:`sw_text`), and the
fields whose values are masked in every output (:func:`identifier_fields`). Re-exported by
:mod:`cardkit.apps.diagnose`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cardkit.acl import Always, And, Issuer, Key, Never, Or, Pin, Rule, Sm
from cardkit.profiles.model import Profile
from cardkit.sw import StatusWordError

__all__ = ["KNOWN_APPLICATIONS", "KnownApplication", "df_chain", "explain_rule", "identifier_fields", "sw_text"]


@dataclass(frozen=True)
class KnownApplication:
    aid: bytes
    label: str
    #: The cardkit profile (applets/<name>) describing it, when there is one.
    profile: str | None = None
    #: File identifiers probed under it when no profile describes the tree.
    fids: tuple[bytes, ...] = ()


def _fids(*names: str) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(n) for n in names)


KNOWN_APPLICATIONS: tuple[KnownApplication, ...] = (
    # ssc.md "Application structure": DF name "sx1.sh.社会保障" in GBK; EF05..EF08 and DF01..DF04 under it.
    KnownApplication(bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF"), "social security application SSSE", "ssc",
                     _fids("EF05", "EF06", "EF07", "EF08", "DF01", "DF02", "DF03", "DF04")),
    # ICAO Doc 9303 Part 10 §3.1 (LDS1 application AID) and §3.6 (EF.COM 011E, DG1 0101, DG2 0102, EF.SOD 011D).
    KnownApplication(bytes.fromhex("A0000002471001"), "ICAO eMRTD LDS1 application", "mrtd",
                     _fids("011E", "0101", "0102", "011D")),
    # NIST SP 800-73-4 Part 1 §2.2: PIV card application AID.
    KnownApplication(bytes.fromhex("A000000308000010000100"), "PIV card application"),
    # OpenPGP card specification 3.4 §4.2.1: RID D276000124, application 01.
    KnownApplication(bytes.fromhex("D27600012401"), "OpenPGP card application"),
    # EMV Book 1 §12.2.2 (PSE "1PAY.SYS.DDF01"); EMV Contactless Book B §3.3 (PPSE "2PAY.SYS.DDF01").
    KnownApplication(b"1PAY.SYS.DDF01", "EMV payment system environment (PSE)"),
    KnownApplication(b"2PAY.SYS.DDF01", "EMV proximity payment system environment (PPSE)"),
)


def sw_text(exc: StatusWordError) -> str:
    return f"{exc.sw:04X} {exc.meaning}"


def identifier_fields(profile: Profile) -> frozenset[str]:
    """Field names whose values identify a person or a card; they are masked in every output."""
    names = {profile.identity_field, *profile.unique_fields}
    names |= {f.field for fs in profile.files for f in fs.fields if "citizen-id" in f.validators}
    return frozenset(n for n in names if n)


def df_chain(path: str) -> list[str]:
    """The DFs whose keys and PINs count for a file at ``path`` (a profile path): nearest first, then MF."""
    parts = path.split("/") if path != "MF" else []
    return [*("/".join(parts[:i]) for i in range(len(parts), 0, -1)), "MF"]


def explain_rule(rule: Rule, profile: Profile | None = None, path: str = "MF") -> str:
    """An access rule in words, naming the profile's keys and PINs where they are known, e.g.
    ``external authentication with key 02 (rkssse)``; ``path`` is the file the rule protects."""
    chain = df_chain(path)

    def named(kind: str, ref: int) -> str:
        if profile is None:
            return ""
        if kind == "key":
            hits = [k.name for k in profile.keys if k.ref & 0x1F == ref and k.df in chain]
        else:
            hits = [p.name for p in profile.pins if p.kind == "pin" and p.ref & 0x1F == ref and p.df in chain]
        return f" ({hits[0]})" if hits else ""

    def words(r: Rule, nested: bool) -> str:
        if isinstance(r, Always):
            return "nothing (always allowed)"
        if isinstance(r, Never):
            return "a condition no one can meet (never allowed)"
        if isinstance(r, Pin):
            return f"verification of PIN {r.ref:02X}{named('pin', r.ref)}"
        if isinstance(r, Key):
            return f"external authentication with key {r.ref:02X}{named('key', r.ref)}"
        if isinstance(r, Sm):
            return "secure messaging"
        if isinstance(r, Issuer):
            return "the issuer channel (MF key 00 authenticated, under secure messaging)"
        if isinstance(r, And | Or):
            text = (" and " if isinstance(r, And) else " or ").join(words(x, True) for x in r.rules)
            return f"({text})" if nested else text
        return r.text
    return words(rule, False)


def _hex(data: bytes | None) -> str | None:
    return None if data is None else data.hex().upper()


def _printable(data: bytes) -> str | None:
    for enc in ("ascii", "gbk"):
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        if text.isprintable():
            return text
    return None
