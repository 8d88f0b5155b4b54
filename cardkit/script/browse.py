"""The card's file system for scripts and the shell: SELECT targets, the current DF, ``ls`` and ``cat``.

ISO 7816-4 has no "list directory" command, so ``ls`` probes candidates with SELECT (ISO 7816-4:2020 §11.2.2,
P1 01 child DF / 02 child EF, P2 04 to get the FCP): the loaded profile's files under the current DF, files
selected earlier in the session, and — with ``ls scan FROM-TO`` — every FID of a range. After probing a DF
the current DF is restored with SELECT parent (P1 03).

``cat`` reads a whole EF (READ BINARY in chunks up to the FCP's size, or READ RECORD 1, 2, … until 6A83) and
decodes it: records as SIMPLE-TLV with the profile's field names (ssc.md: tag = record number). File contents
may be personal data: without ``show_data`` a value is shown only when the profile maps it to a field, and
identifier fields (the profile's identity and unique fields) are always masked; everything else is shown as
length + SHA-256 prefix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from cardkit.apdu import CommandApdu
from cardkit.commands import iso
from cardkit.errors import ParseError, ProfileError
from cardkit.profiles.model import FileSpec, Profile
from cardkit.script.parser import ScriptError
from cardkit.script.tracefile import describe_fcp
from cardkit.session import CardSession
from cardkit.sw import check

__all__ = ["FileSystemView", "Target", "resolve_target"]

MF = "3F00"
_FID_RE = re.compile(r"[0-9A-Fa-f]{4}\Z")
_AID_RE = re.compile(r"(?:[0-9A-Fa-f]{2}){5,16}\Z")
_CHUNK = 0xC8  # READ BINARY chunk: leaves room for secure messaging overhead within a short Le
_SW_NOT_FOUND = 0x6A82  # ISO 7816-4:2020 §5.6 Table 6
_SW_RECORD_NOT_FOUND = 0x6A83
_IDENTIFIER_VALIDATORS = ("citizen-id", "ssc-card-number")


@dataclass(frozen=True)
class Target:
    """A resolved SELECT: the command, and how the current DF changes (``kind`` drives :meth:`FileSystemView.moved`)."""

    command: CommandApdu
    kind: str  # mf, parent, aid, ef, df, fid, path, relpath
    fids: tuple[str, ...] = ()
    aid: str = ""


def _fci(choice: str) -> iso.FciChoice:
    return {"fcp": "fcp", "fci": "fci", "none": "none"}[choice]  # type: ignore[return-value]


def resolve_target(text: str, view: FileSystemView, fci: str | None = None) -> Target:
    """Turn a script target (``MF``, ``..``, ``EF05``, ``aid:…``, ``ef:…``, ``df:…``, ``/DDF1/EF05``, a profile
    path) into a SELECT command asking for ``fci`` (fcp, fci or none; default: the FCI for a DF name,
    the FCP otherwise). Raises :class:`ScriptError` for what is none of these."""
    p2 = _fci(fci or "fcp")
    p2_name = _fci(fci or "fci")
    t = text.strip()
    low = t.lower()
    try:
        if low in ("mf", "/", MF.lower()):
            return Target(iso.select_mf(p2_fci=p2), "mf")
        if t == "..":
            return Target(iso.select_parent(p2_fci=p2), "parent")
        prefix, sep, rest = t.partition(":")
        if sep and prefix.lower() in ("aid", "ef", "df", "fid"):
            raw = bytes.fromhex(rest)
            kind = prefix.lower()
            if kind == "aid":
                return Target(iso.select_aid(raw, p2_fci=p2_name), "aid", aid=rest.upper())
            build = {"ef": iso.select_child_ef, "df": iso.select_child_df, "fid": iso.select_fid}[kind]
            return Target(build(raw, p2_fci=p2), kind, (rest.upper(),))
        if "/" in t:
            parts = [x for x in t.split("/") if x]
            if parts and all(_FID_RE.match(x) for x in parts):
                absolute = t.startswith("/") or parts[0].upper() == MF
                fids = tuple(x.upper() for x in parts if not (absolute and x.upper() == MF))
                if not fids:
                    return Target(iso.select_mf(p2_fci=p2), "mf")
                raw = bytes.fromhex("".join(fids))
                return Target(iso.select_path(raw, from_mf=absolute, p2_fci=p2), "path" if absolute else "relpath",
                              fids)
        elif _FID_RE.match(t):
            return Target(iso.select_fid(bytes.fromhex(t), p2_fci=p2), "fid", (t.upper(),))
        elif _AID_RE.match(t):
            return Target(iso.select_aid(bytes.fromhex(t), p2_fci=p2_name), "aid", aid=t.upper())
    except ValueError as exc:
        raise ScriptError(f"bad target {t!r}: {exc}") from None
    named = view.profile_fids(t)
    if named is None:
        hint = "" if view.profile else " (or load a profile to use names)"
        raise ScriptError(f"target {t!r} is not MF, .., a FID, aid:HEX, ef:FID, df:FID or a /PATH{hint}")
    if not named:
        return Target(iso.select_mf(p2_fci=p2), "mf")
    return Target(iso.select_path(bytes.fromhex("".join(named)), p2_fci=p2), "path", tuple(named))


@dataclass
class FileSystemView:
    """What the script knows of the card's file system: the current DF (as FIDs from the MF, or ``aid:…`` when
    a DF was selected by name at an unknown place), the profile, and the files seen under each DF."""

    profile: Profile | None = None
    cwd: list[str] = field(default_factory=lambda: [MF])
    seen: dict[tuple[str, ...], dict[str, bool]] = field(default_factory=dict)

    # ------------------------------------------------------------------ profile helpers
    def _profile_fid_path(self, path: str) -> list[str]:
        if self.profile is None:
            return []
        parts = path.split("/")
        return [self.profile.file("/".join(parts[: i + 1])).fid.hex().upper() for i in range(len(parts))]

    def normalize(self) -> None:
        """Replace a leading ``aid:…`` of the current DF by the FIDs of the profile DF with that name."""
        if self.profile is None or not self.cwd or not self.cwd[0].startswith("aid:"):
            return
        for fs in self.profile.files:
            if fs.is_df and fs.name and f"aid:{fs.name.hex().upper()}" == self.cwd[0]:
                self.cwd = [MF, *self._profile_fid_path(fs.path), *self.cwd[1:]]
                return

    def profile_path(self) -> str | None:
        """The profile path of the current DF ("MF", "SSSE", "SSSE/DF01"), when the profile has it."""
        self.normalize()
        if self.profile is None:
            return None
        if self.cwd == [MF]:
            return "MF"
        for fs in self.profile.files:
            if fs.is_df and [MF, *self._profile_fid_path(fs.path)] == self.cwd:
                return fs.path
        return None

    def profile_fids(self, name: str) -> list[str] | None:
        """FIDs from the MF of a profile path (absolute, or relative to the current DF); None if unknown."""
        if self.profile is None:
            return None
        name = name.strip("/")
        if name.upper() == "MF":
            return []
        here = self.profile_path()
        for cand in ([f"{here}/{name}"] if here and here != "MF" else []) + [name]:
            try:
                self.profile.file(cand)
            except ProfileError:
                continue
            return self._profile_fid_path(cand)
        return None

    def profile_spec(self, fid: str) -> FileSpec | None:
        """The profile's spec of child ``fid`` of the current DF."""
        here = self.profile_path()
        if self.profile is None or here is None:
            return None
        for fs in self.profile.files:
            if fs.parent == here and fs.fid.hex().upper() == fid.upper():
                return fs
        return None

    # ------------------------------------------------------------------ current DF
    def display(self) -> str:
        """The current DF for prompts: ``/``, ``/DDF1/DF01``, or the profile path ``/SSSE/DF01``."""
        here = self.profile_path()
        if here is not None:
            return "/" if here == "MF" else "/" + here
        if self.cwd and self.cwd[0].startswith("aid:"):
            return "/".join(self.cwd)
        return "/" + "/".join(self.cwd[1:])

    def moved(self, target: Target, is_df: bool | None) -> None:
        """Update the current DF after ``target`` was selected; ``is_df`` from the FCP when there was one."""
        if target.kind == "mf":
            self.cwd = [MF]
        elif target.kind == "parent":
            self.cwd = self.cwd[:-1] or [MF]
        elif target.kind == "aid":
            self.cwd = [f"aid:{target.aid}"]
            self.normalize()
        elif target.kind in ("ef", "df", "fid"):
            fid = target.fids[0]
            if is_df is None:
                spec = self.profile_spec(fid)
                is_df = target.kind == "df" or (spec is not None and spec.is_df)
            self.seen.setdefault(tuple(self.cwd), {})[fid] = bool(is_df)
            if is_df:
                if fid == MF:
                    self.cwd = [MF]
                elif fid in self.cwd:
                    self.cwd = self.cwd[: self.cwd.index(fid) + 1]
                else:
                    self.cwd = [*self.cwd, fid]
        elif target.kind in ("path", "relpath"):
            base = [MF] if target.kind == "path" else list(self.cwd)
            fids = list(target.fids)
            if not is_df:
                self.seen.setdefault(tuple(base + fids[:-1]), {})[fids[-1]] = False
                fids = fids[:-1]
            self.cwd = base + fids

    # ------------------------------------------------------------------ ls
    def ls(self, session: CardSession, scan: tuple[int, int] | None = None) -> list[str]:
        """One line per file found under the current DF (see the module docstring)."""
        cands: dict[str, bool | None] = {}
        here = self.profile_path()
        if self.profile is not None and here is not None:
            for fs in self.profile.files:
                if fs.parent == here:
                    cands[fs.fid.hex().upper()] = fs.is_df
        for fid, is_df in self.seen.get(tuple(self.cwd), {}).items():
            cands.setdefault(fid, is_df)
        if scan is not None:
            lo, hi = scan
            if hi < lo or hi - lo > 0x3FF:
                raise ScriptError("ls scan: give FROM-TO with FROM <= TO and at most 1024 FIDs")
            for n in range(lo, hi + 1):
                cands.setdefault(f"{n:04X}", None)
        lines: list[str] = []
        for fid in sorted(cands):
            if fid in (MF, "3FFF", "FFFF"):
                continue
            line = self._probe(session, fid, cands[fid], quiet=scan is not None and fid not in self._named(here))
            if line:
                lines.append(line)
        return lines or ["(no files known here: try 'ls scan 0000-00FF' or load a profile)"]

    def _named(self, here: str | None) -> set[str]:
        if self.profile is None or here is None:
            return set(self.seen.get(tuple(self.cwd), {}))
        return {fs.fid.hex().upper() for fs in self.profile.files if fs.parent == here} | set(
            self.seen.get(tuple(self.cwd), {}))

    def _probe(self, session: CardSession, fid: str, is_df: bool | None, *, quiet: bool) -> str | None:
        raw = bytes.fromhex(fid)
        order = [is_df] if is_df is not None else [False, True]
        resp = None
        for as_df in order:
            cmd = iso.select_child_df(raw) if as_df else iso.select_child_ef(raw)
            resp = session.transmit(cmd)
            if resp.sw != _SW_NOT_FOUND:
                break
        spec = self.profile_spec(fid)
        label = f"  {spec.path}" if spec else ""
        if resp is None or resp.sw == _SW_NOT_FOUND:
            return None if quiet else f"{fid}  (not found){label}"
        if resp.sw != 0x9000 and resp.sw1 != 0x62:
            from cardkit.sw import describe

            return f"{fid}  ({resp.sw:04X} {describe(resp.sw)}){label}"
        try:
            fcp = iso.parse_fcp(resp.data) if resp.data else None
        except ParseError:
            fcp = None
        found_df = bool(fcp.is_df) if fcp is not None else bool(is_df)
        if found_df:
            session.transmit(iso.select_parent(p2_fci="none"))
        self.seen.setdefault(tuple(self.cwd), {})[fid] = found_df
        kind = "DF" if found_df else "EF"
        desc = describe_fcp(fcp)[5:] if fcp is not None else "(no FCP)"
        return f"{fid}  {kind}  {desc}{label}"

    # ------------------------------------------------------------------ cat
    def cat(self, session: CardSession, text: str, *, show_data: bool) -> list[str]:
        """Read and decode a whole EF (see the module docstring). Raises the card's typed status-word errors."""
        target = resolve_target(text if not _FID_RE.match(text) else f"ef:{text}", self)
        fcp_data = session.send(target.command, context={"file": text}, allow_warnings=True).data
        fcp = iso.parse_fcp(fcp_data) if fcp_data else None
        if fcp is not None and fcp.is_df:
            if target.kind not in ("ef",):
                self.moved(target, True)
            raise ScriptError(f"{text} is a DF: use 'cd {text}' then 'ls'")
        fid = target.fids[-1] if target.fids else ""
        if target.kind in ("path", "relpath"):
            spec = self._spec_by_fids(target)
        else:
            spec = self.profile_spec(fid)
        head = f"{text}: " + (describe_fcp(fcp)[5:] if fcp is not None else "(no FCP)")
        if spec is not None:
            head += f"  [{spec.path}]"
        structure = fcp.structure if fcp is not None else (spec.type if spec is not None else "transparent")
        if structure in ("linear-fixed", "linear-variable", "cyclic", "simple-tlv"):
            return [head, *self._records(session, spec, fcp.record_count if fcp else None, show_data)]
        return [head, *self._binary(session, spec, fcp.size if fcp else None, show_data)]

    def _spec_by_fids(self, target: Target) -> FileSpec | None:
        if self.profile is None:
            return None
        want = list(target.fids) if target.kind == "path" else [*self.cwd[1:], *target.fids]
        for fs in self.profile.files:
            if self._profile_fid_path(fs.path) == want:
                return fs
        return None

    def _masked_fields(self) -> set[str]:
        if self.profile is None:
            return set()
        names = {self.profile.identity_field, *self.profile.unique_fields}
        for fs in self.profile.files:
            names |= {f.field for f in fs.fields if any(v in _IDENTIFIER_VALIDATORS for v in f.validators)}
        return names

    def _records(self, session: CardSession, spec: FileSpec | None, count: int | None, show_data: bool) -> list[str]:
        from cardkit.profiles.validators import mask_identifier

        lines: list[str] = []
        masked = self._masked_fields()
        for number in range(1, (count or 254) + 1):
            cmd = iso.read_record(number)
            resp = session.transmit(cmd)
            if resp.sw == _SW_RECORD_NOT_FOUND:
                break
            check(resp, cmd, context={"record": str(number)}, allow_warnings=True)
            data = resp.data
            tag, length = (data[0], data[1]) if len(data) >= 2 else (0, 0)
            value = data[2:2 + length]
            fspec = next((f for f in spec.fields if f.number == tag), None) if spec is not None else None
            line = f"  record {number}: tag {tag:02X}, {length} bytes"
            if fspec is not None:
                try:
                    decoded = fspec.codec.decode(value)
                except Exception:  # any codec failure: show that it is undecodable
                    decoded = None
                if decoded is not None and fspec.field in masked and not show_data:
                    decoded = mask_identifier(decoded)
                line += f"  {fspec.field} = {decoded}" if decoded is not None else f"  {fspec.field} (undecodable)"
                if decoded is None and not show_data:
                    line += f" <sha256:{hashlib.sha256(value).hexdigest()[:8]}>"
            elif not show_data:
                line += f"  <sha256:{hashlib.sha256(data).hexdigest()[:8]}>"
            if show_data:
                line += f"\n    {data.hex(' ').upper()}"
            lines.append(line)
        return lines or ["  (no records)"]

    def _binary(self, session: CardSession, spec: FileSpec | None, size: int | None, show_data: bool) -> list[str]:
        chunks: list[bytes] = []
        offset = 0
        while size is None or offset < size:
            want = _CHUNK if size is None else min(_CHUNK, size - offset)
            cmd = iso.read_binary(offset, want)
            resp = session.transmit(cmd)
            if resp.sw in (0x6B00, 0x6282) or (resp.sw == 0x9000 and not resp.data):
                chunks.append(resp.data)
                break
            check(resp, cmd, context={"offset": str(offset)})
            chunks.append(resp.data)
            offset += len(resp.data)
            if len(resp.data) < want:
                break
        data = b"".join(chunks)
        out = [f"  {len(data)} bytes, sha256:{hashlib.sha256(data).hexdigest()[:16]}"]
        if show_data:
            out += [f"  {i:04X}: {data[i:i + 16].hex(' ').upper()}" for i in range(0, len(data), 16)]
            try:
                from cardkit.tlv import ber_decode, pretty

                if data.rstrip(b"\x00\xff"):
                    body = data.rstrip(b"\x00\xff") if data[:1] not in (b"\x00", b"\xff") else data
                    ber_decode(body)
                    out += ["  " + line for line in pretty(body).splitlines()]
            except ParseError:
                pass
        elif spec is not None and spec.fields:
            out.append(f"  field {spec.fields[0].field} (use --show-data to print it)")
        return out
