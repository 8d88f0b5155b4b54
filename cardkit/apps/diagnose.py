"""Card diagnosis for technicians: what is this card, what is on it, and why does it refuse.

:func:`diagnose` walks a card through a :class:`~cardkit.session.CardSession` and returns a JSON-able report
(a ``dict``). Every step is independent: one that fails records *why* in words (the status word and its
meaning, the access condition not met) and the report goes on; only a transport failure ends it. In order:

1. reader and protocol; the ATR decoded and matched against the ATR list; the chip serial (historical bytes).
2. GlobalPlatform without keys (:mod:`cardkit.apps.diagnose_gp`): the ISD, CPLC, card data, key information.
3. applications: EF.DIR and the AIDs of :data:`KNOWN_APPLICATIONS`; the profile is the one given or the one
   of the first recognised application.
4. PIN retry counters without spending a try: VERIFY with no data (ISO 7816-4:2020 §11.5.6 — ``63Cx``,
   ``9000`` already verified, ``6983`` blocked), before any PIN value is used.
5. the file tree (the profile's, else the FIDs known for the recognised applications): each FCP decoded,
   security attributes in the profile rule syntax, EF contents read where the read rule can be met — with the
   profile's keys (``keystore``: EXTERNAL AUTHENTICATE) and PINs (``pins``: VERIFY), each tried at most once
   and never again after a refusal, so no retry counter is spent twice.
6. GlobalPlatform with a key set: the registry (last, so the secure channel never changes what step 5 sees).

Personal data: identifier fields (the profile's identity and unique fields, citizen-ID fields) are masked with
:func:`~cardkit.profiles.validators.mask_identifier`; contents no profile field maps are shown as length and
SHA-256 only. Raw contents (hex) are added only with ``contents=True`` — for :mod:`cardkit.apps.snapshot`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from cardkit.acl import Always, And, Key, Never, Or, Pin, Rule, decode_compact, decode_expanded, parse_rule
from cardkit.apdu import CommandApdu
from cardkit.apps.diagnose_explain import (
    KNOWN_APPLICATIONS,
    KnownApplication,
    _hex,
    _printable,
    explain_rule,
    identifier_fields,
)
from cardkit.apps.diagnose_explain import df_chain as df_chain
from cardkit.apps.diagnose_explain import sw_text as sw_text
from cardkit.apps.diagnose_gp import GpProbe
from cardkit.commands import iso
from cardkit.commands.iso import Fcp, parse_fcp
from cardkit.errors import CardkitError, ParseError, SecureChannelError, TransportError
from cardkit.profiles.model import FieldSpec, FileSpec, Profile
from cardkit.profiles.validators import mask_identifier
from cardkit.session import CardSession
from cardkit.sw import RecordNotFound, SecurityStatusNotSatisfied, StatusWordError, describe

if TYPE_CHECKING:
    from cardkit.keys.store import Keystore

__all__ = ["KNOWN_APPLICATIONS", "DiagnoseOptions", "KnownApplication", "diagnose", "explain_rule",
           "identifier_fields"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# ISO/IEC 7816-4:2005 §8.2.1.1: EF.DIR 2F00 (application templates 61 {4F AID, 50 label}) and EF.ATR 2F01.
EF_DIR, EF_ATR = b"\x2f\x00", b"\x2f\x01"
_TAG_APP_TEMPLATE, _TAG_AID, _TAG_LABEL = 0x61, 0x4F, 0x50
_CHUNK = 256  # READ BINARY Ne per command: short Le 00 (ISO 7816-4:2020 §5.1)
_MAX_TRANSPARENT = 0x8000  # 15-bit offsets of READ BINARY (ISO 7816-4:2020 §11.2)
_SELECT_WARNINGS = (0x6283, 0x6285)  # selected file deactivated / in termination state (§5.6 Table 6)
_RECORD_TYPES = ("linear-fixed", "linear-variable", "cyclic")


@dataclass(frozen=True)
class DiagnoseOptions:
    """What the diagnosis may use beyond the card itself.

    ``pins`` maps profile PIN names to their values (secret: never logged or reported). ``gp_keyset`` names a
    GlobalPlatform key set in ``keystore`` (``NAME`` used for ENC, MAC and DEK, or ``NAME-enc``/``-mac``/
    ``-dek``; AES → SCP03, 3DES → SCP02). ``contents`` adds raw contents (hex) to the report — personal data,
    for snapshots only.
    """

    profile: Profile | None = None
    keystore: Keystore | None = None
    pins: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    gp_keyset: str | None = None
    contents: bool = False
    #: The algorithm of the card's keys when the profile is recognised rather than given (e.g. "3des").
    algorithm: str | None = None




class _Diagnosis:
    def __init__(self, session: CardSession, opts: DiagnoseOptions) -> None:
        self.s = session
        self.o = opts
        self.profile = opts.profile
        self.problems: list[dict[str, str]] = []
        self.serial: bytes | None = None
        self.region = ""
        #: "key 02" / "pin NAME" -> the reason it is not tried again (after a refusal or when impossible).
        self.failed_auth: dict[str, str] = {}

    # ------------------------------------------------------------------ helpers
    def problem(self, step: str, reason: str) -> str:
        self.problems.append({"step": step, "reason": reason})
        log.info("diagnosis: %s: %s", step, reason)
        return reason

    def attempt(self, step: str, fn: Callable[[], T]) -> tuple[T | None, str | None]:
        """Run one step; a refusal or a malformed answer becomes a reason in words (and a problem)."""
        try:
            return fn(), None
        except TransportError:
            raise
        except StatusWordError as exc:
            return None, self.problem(step, sw_text(exc))
        except SecureChannelError as exc:
            return None, self.problem(step, f"secure channel: {exc}")
        except ParseError as exc:
            return None, self.problem(step, f"malformed answer: {exc}")
        except CardkitError as exc:
            return None, self.problem(step, str(exc))

    # ------------------------------------------------------------------ 1. reader and ATR
    def reader(self) -> dict[str, Any]:
        t = self.s.transport
        return {"name": getattr(t, "name", "?"), "protocol": getattr(t, "protocol", None)}

    def atr(self) -> dict[str, Any]:
        from cardkit.atr import Atr, AtrList
        from cardkit.issuance.engine import chip_serial

        raw = self.s.atr
        parsed, why = self.attempt("ATR", lambda: Atr.parse(raw))
        out: dict[str, Any] = parsed.to_dict() if parsed is not None else {"atr": raw.hex().upper(), "error": why}
        out["names"] = AtrList.default().match(raw)
        try:
            self.serial = chip_serial(raw)
            out["chip_serial"] = self.serial.hex().upper()
        except CardkitError as exc:
            out["chip_serial"] = None
            out["chip_serial_note"] = str(exc)
        return out

    # ------------------------------------------------------------------ 3. files
    def select(self, path: str, cmd: CommandApdu, label: str | None = None) -> tuple[Fcp | None, dict[str, Any]]:
        """SELECT with FCP; the entry says whether the file is there and what its FCP tells."""
        entry: dict[str, Any] = {"path": path}
        if label:
            entry["label"] = label
        try:
            resp = self.s.send(cmd, context={"file": path}, allow=_SELECT_WARNINGS)
        except StatusWordError as exc:
            entry["present"] = False
            entry["error"] = f"SELECT answered {sw_text(exc)}"
            if exc.sw != 0x6A82:
                self.problem(f"{path}: SELECT", sw_text(exc))
            return None, entry
        entry["present"] = True
        if resp.sw in _SELECT_WARNINGS:
            entry["select_warning"] = f"{resp.sw:04X} {describe(resp.sw)}"
        if not resp.data:
            entry["fcp_error"] = "the card returned no FCP"
            return None, entry
        entry["fcp"] = resp.data.hex().upper()
        fcp, why = self.attempt(f"{path}: FCP", lambda: parse_fcp(resp.data))
        if fcp is None:
            entry["fcp_error"] = why
            return None, entry
        entry.update(self.describe_fcp(path, fcp))
        return fcp, entry

    def describe_fcp(self, path: str, fcp: Fcp) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fid": _hex(fcp.fid), "type": fcp.structure or "unknown", "sfi": fcp.sfi, "size": fcp.size,
            "record_size": fcp.record_size, "record_count": fcp.record_count, "lcs": fcp.lcs,
        }
        if fcp.df_name is not None:
            out["df_name"] = fcp.df_name.hex().upper()
            text = _printable(fcp.df_name)
            if text is not None:
                out["df_name_text"] = text
        try:
            if fcp.security_expanded is not None:
                out["rules"] = decode_expanded(fcp.security_expanded, fcp.is_df).to_text()
                out["rules_format"] = "expanded (AB)"
            elif fcp.security_compact is not None:
                out["rules"] = decode_compact(fcp.security_compact, fcp.is_df).to_text()
                out["rules_format"] = "compact (8C)"
            else:
                other = [f"{t:02X}" for t, _ in fcp.tags if t in (0x86, 0x8B, 0x8D, 0x8E, 0xA0, 0xA1)]
                out["rules"] = None
                out["rules_note"] = (f"security attributes in tag(s) {', '.join(other)} are not decoded" if other
                                     else "the FCP carries no security attributes")
        except ParseError as exc:
            out["rules"] = None
            out["rules_note"] = self.problem(f"{path}: security attributes", f"not decodable: {exc}")
        return out

    def refused(self, path: str, exc: StatusWordError, rule: Rule | None, lcs: str | None) -> str:
        reason = f"read refused: {sw_text(exc)}"
        if exc.sw == 0x6985 and lcs not in (None, "operational-activated"):
            reason += f" — the file is in life-cycle state {lcs}"
        elif exc.sw in (0x6982, 0x6983, 0x6984, 0x6987, 0x6988) and rule is not None:
            reason += f" — read needs {explain_rule(rule, self.profile, path)}"
            tried = [self.failed_auth[k] for k in sorted(self.failed_auth) if k in self._needed(rule, path)]
            if tried:
                reason += "; " + "; ".join(tried)
            elif self.o.keystore is None and not self.o.pins and not isinstance(rule, Always | Never):
                reason += " (no keys or PINs were given)"
        return self.problem(path, reason)

    def _needed(self, rule: Rule, path: str) -> set[str]:
        if isinstance(rule, And | Or):
            return set().union(*(self._needed(r, path) for r in rule.rules))
        if isinstance(rule, Key):
            return {f"key {rule.ref:02X}"}
        if isinstance(rule, Pin) and self.profile is not None:
            return {f"pin {p.name}" for p in self.profile.pins if p.kind == "pin" and p.ref & 0x1F == rule.ref}
        return set()

    def data(self, cmd: CommandApdu, path: str) -> bytes:
        return self.s.send(cmd, context={"file": path}, allow_warnings=cmd.ins == 0xB0).data  # 6282: short file

    def with_access(self, path: str, rule: Rule | None, fn: Callable[[], T]) -> T:
        """Run ``fn``; on 6982 meet ``rule`` once with the given keys/PINs and run it again."""
        try:
            return fn()
        except SecurityStatusNotSatisfied:
            if rule is None or not self.satisfy(rule, path):
                raise
            return fn()

    def satisfy(self, rule: Rule, path: str) -> bool:
        if isinstance(rule, And):
            return all(self.satisfy(r, path) for r in rule.rules)
        if isinstance(rule, Or):
            return any(self.satisfy(r, path) for r in rule.rules)
        if isinstance(rule, Key):
            return self.external_auth(rule.ref, path)
        if isinstance(rule, Pin):
            return self.verify_pin(rule.ref, path)
        return False

    def external_auth(self, ref: int, path: str) -> bool:
        from cardkit.issuance.engine import card_key
        from cardkit.keys.store import alg_of
        from cardkit.sm.auth import external_authenticate

        prof, ks, label = self.profile, self.o.keystore, f"key {ref:02X}"
        if prof is None or ks is None or label in self.failed_auth:
            return False
        spec = next((k for k in prof.keys if k.ref & 0x1F == ref and k.df in df_chain(path)
                     and k.usage == "external-auth"), None)
        if spec is None:
            self.failed_auth[label] = f"the profile names no external-authentication key {ref:02X} for {path}"
            return False
        step = f"EXTERNAL AUTHENTICATE with key {ref:02X} ({spec.name})"
        if self.serial is None:
            self.failed_auth[label] = self.problem(step, "not tried: the key is diversified with the chip serial, "
                                                         "which this card's ATR does not carry")
            return False
        try:
            value = card_key(ks, prof, spec.name, self.serial, {"region": self.region} if self.region else {})
            p2 = spec.ref | (0x80 if spec.df != "MF" else 0)  # ISO 7816-4:2020 §7.5.1: b8 = DF-specific reference
            external_authenticate(self.s.transmit, alg_of(prof.algorithm), value, p2)
        except TransportError:
            raise
        except StatusWordError as exc:
            self.failed_auth[label] = self.problem(step, f"refused: {sw_text(exc)} — wrong key, wrong algorithm "
                                                         f"({prof.algorithm}) or wrong diversification; not retried")
            return False
        except CardkitError as exc:  # keystore or key-size problems: nothing was sent that spends a try
            self.failed_auth[label] = self.problem(step, f"not possible: {exc}")
            return False
        return True

    def verify_pin(self, ref: int, path: str) -> bool:
        prof = self.profile
        if prof is None:
            return False
        spec = next((p for p in prof.pins if p.kind == "pin" and p.ref & 0x1F == ref and p.df in df_chain(path)), None)
        if spec is None or spec.name not in self.o.pins or f"pin {spec.name}" in self.failed_auth:
            return False
        p2 = (spec.ref & 0x1F) | (0x80 if spec.df != "MF" else 0)
        resp = self.s.transmit(iso.verify(p2, self.o.pins[spec.name]))
        if resp.sw == 0x9000:
            return True
        self.failed_auth[f"pin {spec.name}"] = self.problem(
            f"VERIFY PIN {spec.name}", f"refused: {resp.sw:04X} {describe(resp.sw)}; not tried again")
        return False

    # ------------------------------------------------------------------ EF contents
    def decode_value(self, fspec: FieldSpec, value: bytes) -> dict[str, Any]:
        out: dict[str, Any] = {"field": fspec.field}
        try:
            text = fspec.codec.decode(value)
        except (CardkitError, ValueError) as exc:
            out["decode_error"] = f"does not decode as {fspec.codec.kind}: {exc}"
            return out
        if self.profile is not None and fspec.field in identifier_fields(self.profile):
            out["value"], out["masked"] = mask_identifier(text), True
        elif fspec.codec.kind == "file":
            out["value"] = f"<{len(value)} bytes>"
        else:
            out["value"] = text
        if fspec.computed == "ssc-card-id" and len(value) == 16:
            # ssc.md "Identifiers": region (3 bytes BCD) ‖ RID D156000005 ‖ chip serial (4) ‖ MAC under IRK (4).
            parts = {"region": value[:3].hex().upper(), "rid": value[3:8].hex().upper(),
                     "chip_serial": value[8:12].hex().upper(), "mac": value[12:].hex().upper()}
            out["parts"] = parts
            if value[:3].hex().isdigit():
                self.region = value[:3].hex()
            if self.serial is not None:
                out["matches_chip"] = value[8:12] == self.serial
                if value[8:12] != self.serial:
                    self.problem(fspec.field, f"names chip serial {parts['chip_serial']} but this chip is "
                                              f"{self.serial.hex().upper()} (data copied from another card?)")
        return out

    def record_entry(self, number: int, data: bytes, spec: FileSpec | None, public: bool) -> dict[str, Any]:
        from cardkit.profiles.codecs import parse_simple_tlv_record

        out: dict[str, Any] = {"number": number, "length": len(data)}
        if self.o.contents or public:
            out["raw"] = data.hex().upper()
        mapped = {f.number: f for f in spec.fields} if spec is not None else {}
        if mapped:
            try:
                tag, value = parse_simple_tlv_record(data)
                out["tag"] = tag
                if tag in mapped:
                    out.update(self.decode_value(mapped[tag], value))
            except ParseError as exc:
                out["decode_error"] = f"not an SSC-style SIMPLE-TLV record: {exc}"
        if "field" not in out:
            out["sha256"] = hashlib.sha256(data).hexdigest()
        return out

    def read_records(self, path: str, fcp: Fcp, spec: FileSpec | None, rule: Rule | None,
                     public: bool) -> list[dict[str, Any]]:
        limit = fcp.record_count or (spec.records if spec is not None and spec.records else 254)
        out: list[dict[str, Any]] = []
        for number in range(1, min(limit, 254) + 1):
            cmd = iso.read_record(number)
            try:
                data = self.with_access(path, rule, partial(self.data, cmd, path))
            except RecordNotFound:
                break
            out.append(self.record_entry(number, data, spec, public))
        return out

    def read_binary(self, path: str, fcp: Fcp, spec: FileSpec | None, rule: Rule | None,
                    public: bool) -> dict[str, Any]:
        size = fcp.size if fcp.size is not None else (spec.size if spec is not None else None)
        end = min(size if size is not None else _MAX_TRANSPARENT, _MAX_TRANSPARENT)
        data = b""
        while len(data) < end:
            n = min(_CHUNK, end - len(data))
            cmd = iso.read_binary(len(data), n)
            try:
                chunk = self.with_access(path, rule, partial(self.data, cmd, path))
            except StatusWordError as exc:
                if data and exc.sw in (0x6B00, 0x6A86):  # past the end of a file of unknown size
                    break
                raise
            data += chunk
            if len(chunk) < n:
                break
        out: dict[str, Any] = {"length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                               "all_zero": not any(data)}
        if self.o.contents or public:
            out["raw"] = data.hex().upper()
        single = [f for f in spec.fields if f.number is None] if spec is not None else []
        if single and any(data) and single[0].codec.kind != "file":
            out.update(self.decode_value(single[0], data))
        elif single:
            out["field"] = single[0].field
        return out

    def file(self, path: str, cmd: CommandApdu, spec: FileSpec | None = None, label: str | None = None,
             public: bool = False) -> dict[str, Any]:
        fcp, entry = self.select(path, cmd, label)
        if fcp is None or fcp.is_df:
            return entry
        rules = entry.get("rules")
        rule = parse_rule(rules.get("read", "never")) if isinstance(rules, dict) else None
        try:
            if fcp.structure in _RECORD_TYPES:
                entry["records"] = self.read_records(path, fcp, spec, rule, public)
            elif fcp.structure == "transparent":
                entry["content"] = self.read_binary(path, fcp, spec, rule, public)
            else:
                entry["read_note"] = f"a {fcp.structure} EF is not read"
        except StatusWordError as exc:
            entry["read_error"] = self.refused(path, exc, rule, fcp.lcs)
        return entry

    # ------------------------------------------------------------------ applications and trees
    def applications(self, ef_dir: Mapping[str, Any]) -> list[dict[str, Any]]:
        from cardkit.tlv import ber_decode

        apps: list[dict[str, Any]] = []
        for rec in ef_dir.get("records", []):
            try:
                for obj in ber_decode(bytes.fromhex(rec["raw"])):
                    if obj.tag == _TAG_APP_TEMPLATE and obj.find(_TAG_AID) is not None:
                        aid, lab = obj.find(_TAG_AID), obj.find(_TAG_LABEL)
                        apps.append({"aid": aid.value.hex().upper() if aid else None, "found_by": "EF.DIR",
                                     "label": _printable(lab.value) if lab else None})
            except (ParseError, ValueError) as exc:
                self.problem("EF.DIR", f"record {rec['number']} is not an application template: {exc}")
        for known in KNOWN_APPLICATIONS:
            resp = self.s.transmit(iso.select_aid(known.aid))
            if resp.sw in (0x9000, *_SELECT_WARNINGS):
                hit = next((a for a in apps if a["aid"] == known.aid.hex().upper()), None)
                if hit is None:
                    hit = {"aid": known.aid.hex().upper(), "found_by": "SELECT"}
                    apps.append(hit)
                hit.update(label=known.label, profile=known.profile)
        return apps

    def pick_profile(self, apps: list[dict[str, Any]]) -> dict[str, Any]:
        from cardkit.profiles.model import find_profile, load_profile

        if self.profile is not None:
            return {"name": self.profile.name, "algorithm": self.profile.algorithm, "how": "given"}
        for app in apps:
            name = app.get("profile")
            if not name:
                continue
            try:
                self.profile = load_profile(find_profile(name), algorithm=self.o.algorithm)
            except CardkitError as exc:
                return {"name": None, "note": self.problem("profile", f"{app['label']} recognised, but profile "
                                                                      f"{name!r} cannot be loaded: {exc}")}
            return {"name": name, "algorithm": self.profile.algorithm,
                    "how": f"recognised by the DF name {app['aid']} ({app['label']})"}
        return {"name": None, "note": "no application with a cardkit profile was recognised"}

    def profile_tree(self, profile: Profile) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        missing: set[str] = set()
        for fs in profile.files:
            if fs.parent in missing:
                missing.add(fs.path)
                out.append({"path": fs.path, "present": False, "error": f"its DF {fs.parent} is not on the card"})
                continue
            fids = b"".join(profile.file("/".join(fs.path.split("/")[: i + 1])).fid
                            for i in range(fs.path.count("/") + 1))
            entry = self.file(fs.path, iso.select_path(fids, p2_fci="fcp"), fs)
            if not entry.get("present"):
                missing.add(fs.path)
                self.problem(fs.path, f"the profile's {fs.type} is not on the card ({entry.get('error')})")
            out.append(entry)
        return out

    def probe_tree(self, apps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for app in apps:
            known = next((k for k in KNOWN_APPLICATIONS if k.aid.hex().upper() == app["aid"]), None)
            if known is None:
                continue
            base = app.get("label") or app["aid"]
            _, entry = self.select(base, iso.select_aid(known.aid, p2_fci="fcp"))
            out.append(entry)
            for fid in known.fids:
                self.s.transmit(iso.select_aid(known.aid, p2_fci="none"))
                entry = self.file(f"{base}/{fid.hex().upper()}", iso.select_child_ef(fid, p2_fci="fcp"))
                if entry.get("error"):  # not an EF: maybe a DF
                    self.s.transmit(iso.select_aid(known.aid, p2_fci="none"))
                    df_fcp, df_entry = self.select(entry["path"], iso.select_child_df(fid, p2_fci="fcp"))
                    entry = df_entry if df_fcp is not None else entry
                if entry.get("present"):
                    out.append(entry)
        return out

    # ------------------------------------------------------------------ 4. PINs
    def pins(self) -> list[dict[str, Any]]:
        prof = self.profile
        if prof is None:
            return []
        out = []
        for pin in prof.pins:
            row: dict[str, Any] = {"name": pin.name, "kind": pin.kind, "df": pin.df, "ref": f"{pin.ref:02X}",
                                   "max_tries": pin.max_tries}
            if pin.kind == "puk":
                row["state"] = ("not readable without spending a try (VERIFY addresses PINs; RESET RETRY "
                                "COUNTER would consume a try)")
                out.append(row)
                continue
            path = "" if pin.df == "MF" else pin.df
            fids = b"".join(prof.file("/".join(path.split("/")[: i + 1])).fid for i in range(path.count("/") + 1)) \
                if path else b""
            sel = self.s.transmit(iso.select_path(fids, p2_fci="none") if fids else iso.select_mf(p2_fci="none"))
            if sel.sw not in (0x9000, *_SELECT_WARNINGS):
                row["state"] = f"not checked: its DF {pin.df} is not selectable ({sel.sw:04X} {describe(sel.sw)})"
                out.append(row)
                continue
            p2 = (pin.ref & 0x1F) | (0x80 if pin.df != "MF" else 0)
            sw = self.s.transmit(iso.verify(p2, None)).sw  # no data: the counter, no try spent (§11.5.6)
            row["sw"] = f"{sw:04X}"
            if sw & 0xFFF0 == 0x63C0:
                row["tries_left"] = sw & 0x0F
                row["state"] = "blocked" if sw & 0x0F == 0 else f"{sw & 0x0F} of {pin.max_tries} tries left"
            elif sw == 0x9000:
                row["state"] = "verified in this session"
            elif sw == 0x6983:
                row["tries_left"] = 0
                row["state"] = "blocked (6983): unblock it with the PUK"
            else:
                row["state"] = self.problem(f"PIN {pin.name}", f"VERIFY without data answered {sw:04X} {describe(sw)}")
            out.append(row)
        return out

    # ------------------------------------------------------------------ the whole run
    def run(self) -> dict[str, Any]:
        report: dict[str, Any] = {"reader": self.reader(), "atr": self.atr()}
        gp_probe = GpProbe(self.s, self.attempt)
        report["gp"] = gp_data = gp_probe.data()
        mf_entry = self.file("MF", iso.select_mf())
        self.s.transmit(iso.select_mf(p2_fci="none"))
        ef_dir = self.file("MF/2F00", iso.select_fid(EF_DIR), label="EF.DIR", public=True)
        self.s.transmit(iso.select_mf(p2_fci="none"))
        ef_atr = self.file("MF/2F01", iso.select_fid(EF_ATR), label="EF.ATR/INFO", public=True)
        apps = self.applications(ef_dir)
        report["applications"] = apps
        report["profile"] = self.pick_profile(apps)
        if self.o.pins:
            known = {p.name for p in self.profile.pins} if self.profile is not None else set()
            for name in sorted(set(self.o.pins) - known):
                self.problem(f"PIN {name}", "a value was given, but the profile has no PIN of that name")
        report["pins"] = self.pins()  # before any file is read: no VERIFY with a value has happened yet
        files = [mf_entry] + [e for e in (ef_dir, ef_atr) if e.get("present")]
        files += self.profile_tree(self.profile) if self.profile is not None else self.probe_tree(apps)
        report["files"] = files
        if self.o.keystore is not None and self.o.gp_keyset is not None:
            gp_probe.with_keys(gp_data, self.o.keystore, self.o.gp_keyset)
        report["problems"] = self.problems
        return report


def diagnose(session: CardSession, options: DiagnoseOptions | None = None) -> dict[str, Any]:
    """Diagnose the card of ``session``; see the module docstring. Raises only transport errors."""
    return _Diagnosis(session, options or DiagnoseOptions()).run()
