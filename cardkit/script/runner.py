"""Run parsed APDU scripts (:mod:`cardkit.script.parser`) on a :class:`~cardkit.session.CardSession`.

:class:`ScriptRunner` executes statements one by one and reports what happens as :class:`Event` values to a
callback (the CLI prints them; the shell too). An unmet expectation raises :class:`ExpectationFailed` — a
:class:`~cardkit.sw.StatusWordError`, so the CLI exits with code 3 — naming file:line, the command, the
response and the status word's meaning; with ``continue_on_failure`` every failure is collected instead.

What is shown: secrets (VERIFY data, keys, cryptograms; ISO 7816-4 §11.5, GPCS §11.8) never, only their
length; file contents (READ/UPDATE BINARY|RECORD, STORE DATA …) as length + SHA-256 prefix unless
``show_data`` — the same redaction as trace files. Error messages are always redacted.

Variables carry their origin. A secret (a PIN, the MRZ) is taken only from a variable read from a file
(``--var-file``), the environment, a prompt or the Python caller — never from ``--var`` on the command line
or a literal in the script — and such variables are never printed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.commands import iso
from cardkit.errors import CardkitError, KeystoreError
from cardkit.keys.store import Keystore
from cardkit.script.browse import FileSystemView, resolve_target
from cardkit.script.channels import ReplayRandom, open_bac, open_gp, open_sm, resolve_alg, sm_key
from cardkit.script.parser import Location, Pattern, ScriptError, Statement, expand_vars
from cardkit.script.tracefile import DATA_INS, command_name, decode_response, is_secret
from cardkit.session import CardSession, redact
from cardkit.sw import StatusWordError, describe
from cardkit.transport.replay import ReplayTransport

if TYPE_CHECKING:
    from cardkit.profiles.model import Profile

__all__ = ["Event", "ExpectationFailed", "ExpectationsUnmet", "RunResult", "ScriptRunner", "Variable", "match_pattern"]

log = logging.getLogger(__name__)

#: Variable origins a secret may come from.
SECRET_ORIGINS = frozenset({"file", "env", "prompt", "api"})
_VAR_ONLY = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")


@dataclass
class Variable:
    """A script variable: its text value and where it came from (``argv``, ``file``, ``env``, ``prompt``,
    ``api``, ``script``, ``capture``). ``secret`` values are never printed; ``personal`` ones (captured
    from file contents) only with ``show_data``."""

    value: str
    origin: str = "script"
    secret: bool = False
    personal: bool = False


@dataclass(frozen=True)
class Event:
    """Something to report: ``kind`` is exchange, wire, echo, info, capture, failure or reset."""

    kind: str
    where: str
    text: str
    detail: Mapping[str, Any] = field(default_factory=dict)


class ExpectationFailed(StatusWordError):
    """A response did not match the script's expectation (exit code 3). The message is redacted."""

    def __init__(self, where: Location, label: str, expected: str, command: str, response: ResponseApdu,
                 response_text: str) -> None:
        super().__init__(response.sw, label)
        self.where = where
        self.expected = expected
        what = (f"got {response.sw:04X} ({describe(response.sw)})" if not expected.startswith("pattern")
                else f"response {response_text} ({describe(response.sw)}) does not match")
        self.args = (f"{where}: {label}: expected {expected}, {what}; command {command}; response {response_text}",)


class ExpectationsUnmet(StatusWordError):
    """``--continue`` found unmet expectations (exit code 3); ``failures`` lists them."""

    def __init__(self, failures: list[ExpectationFailed]) -> None:
        first = failures[0]
        super().__init__(first.sw, first.command)
        self.failures = failures
        where = ", ".join(str(f.where) for f in failures[:10]) + (" …" if len(failures) > 10 else "")
        self.args = (f"{len(failures)} unmet expectation(s) at {where}",)


@dataclass
class RunResult:
    """What a run did: statements executed, APDUs sent (logical), failures collected, whether ``exit`` ran."""

    statements: int = 0
    apdus: int = 0
    failures: list[ExpectationFailed] = field(default_factory=list)
    exited: bool = False


def match_pattern(pattern: Pattern, response: bytes, var_bytes: Callable[[str, str | None], bytes]) \
        -> dict[str, bytes] | None:
    """Match ``response`` (data ‖ SW1 SW2) against the pattern; the captures of the first matching
    alternative, or None when none matches."""
    text = response.decode("latin-1")
    for alt in pattern.alternatives:
        parts: list[str] = []
        names: list[str] = []
        for tok in alt.tokens:
            if tok[0] == "hex":
                hx = str(tok[1])
                for i in range(0, len(hx), 2):
                    parts.append(_byte_regex(hx[i:i + 2]))
            elif tok[0] == "star":
                parts.append(".*?")
            elif tok[0] == "cap":
                names.append(str(tok[1]))
                n = tok[2]
                parts.append(f"(?P<{tok[1]}>{'.*?' if n is None else '.{' + str(n) + '}'})")
            else:
                parts.append(re.escape(var_bytes(str(tok[1]), tok[2]).decode("latin-1")))  # type: ignore[arg-type]
        target = text[-2:] if alt.sw_only else text
        m = re.fullmatch("".join(parts), target, re.DOTALL)
        if m:
            return {name: m.group(name).encode("latin-1") for name in names}
    return None


@functools.lru_cache(maxsize=1024)
def _byte_regex(two: str) -> str:
    """A regex (over latin-1 text) for one pattern byte: two hex digits, ``?`` a wildcard nibble."""
    if "?" not in two:
        return re.escape(chr(int(two, 16)))
    hi, lo = two[0], two[1]
    if hi == "?" and lo == "?":
        return "."
    values = [b for b in range(256) if (hi == "?" or b >> 4 == int(hi, 16)) and (lo == "?" or b & 15 == int(lo, 16))]
    if len(values) == 1:
        return re.escape(chr(values[0]))
    return "[" + "".join(re.escape(chr(v)) for v in values) + "]"


def _success(resp: ResponseApdu) -> bool:
    return resp.sw == 0x9000 or resp.sw1 == 0x61


def _success_or_warning(resp: ResponseApdu) -> bool:
    return _success(resp) or resp.sw1 == 0x62


class _WireTap:
    """A transport wrapper that reports every wire exchange (to show APDUs after secure messaging)."""

    def __init__(self, inner: Any, sink: Callable[[bytes, bytes], None]) -> None:
        self.inner, self.sink, self.name = inner, sink, inner.name

    @property
    def atr(self) -> bytes:
        return bytes(self.inner.atr)

    @property
    def protocol(self) -> str:
        return str(self.inner.protocol)

    def transmit(self, apdu: bytes) -> bytes:
        response = bytes(self.inner.transmit(apdu))
        self.sink(bytes(apdu), response)
        return response

    def reset(self, cold: bool = False) -> bytes:
        return bytes(self.inner.reset(cold))

    def close(self) -> None:
        self.inner.close()


class ScriptRunner:
    """Execute statements on ``session``. See the module docstring.

    ``keystore`` gives the keys of ``open``/``auth``; ``variables`` are plain values (origin ``api``) or
    :class:`Variable`; ``prompt(label)`` asks for a secret without echo (None: no terminal);
    ``on_event`` receives every :class:`Event`; ``replay`` (a dry run) makes handshakes reuse the host random
    values of the recording; ``show_wire`` reports the APDUs as sent on the wire (after secure messaging).
    """

    def __init__(self, session: CardSession, *, keystore: Keystore | None = None,
                 variables: Mapping[str, str | Variable] | None = None,
                 prompt: Callable[[str], str] | None = None, on_event: Callable[[Event], None] | None = None,
                 continue_on_failure: bool = False, show_data: bool = False, show_wire: bool = False,
                 replay: ReplayTransport | None = None, profile: Profile | None = None,
                 get_response: str = "manual") -> None:
        self.session = session
        self.keystore = keystore
        self.vars: dict[str, Variable] = {}
        for name, value in (variables or {}).items():
            self.vars[name] = value if isinstance(value, Variable) else Variable(value, "api", secret=False)
        self.prompt = prompt
        self.on_event = on_event or (lambda event: None)
        self.continue_on_failure = continue_on_failure
        self.show_data = show_data
        self.show_wire = show_wire
        self.replay = ReplayRandom(replay) if replay is not None else None
        self.get_response = get_response
        self.fs = FileSystemView(profile)
        self.result = RunResult()
        self._wire: list[tuple[bytes, bytes]] = []
        self._origin: CommandApdu | None = None
        self._where = Location("<api>", 0)
        if show_wire:
            session.transport = _WireTap(session.transport, lambda c, r: self._wire.append((c, r)))

    # ------------------------------------------------------------------ running
    def run(self, statements: Iterable[Statement]) -> RunResult:
        """Run statements until the end or ``exit``; raise at the first failure (unless continuing)."""
        for stmt in statements:
            if not self.execute(stmt):
                self.result.exited = True
                break
        return self.result

    def execute(self, stmt: Statement) -> bool:
        """Run one statement; False after ``exit``. Errors get the statement's file:line in their message."""
        self._where = stmt.where
        self.result.statements += 1
        try:
            return self._execute(stmt)
        except ExpectationFailed:
            raise
        except ScriptError as exc:
            if exc.where is None:
                raise ScriptError(str(exc), stmt.where) from None
            raise
        except CardkitError as exc:
            if exc.args and isinstance(exc.args[0], str) and not exc.args[0].startswith(str(stmt.where)):
                exc.args = (f"{stmt.where}: {exc.args[0]}", *exc.args[1:])
            raise
        except ValueError as exc:  # a variable that expanded to something that is not a number / hex
            raise ScriptError(f"bad value: {exc}", stmt.where) from None

    def _emit(self, kind: str, text: str, **detail: Any) -> None:
        self.on_event(Event(kind, str(self._where), text, detail))

    def _execute(self, stmt: Statement) -> bool:
        kind = stmt.kind
        handler = getattr(self, f"_do_{kind}", None)
        if handler is None:
            raise ScriptError(f"'{kind}' cannot run here")
        return handler(stmt) is not False

    # ------------------------------------------------------------------ variables
    def _lookup(self, *, for_hex: bool = False) -> dict[str, str]:
        out = {}
        for name, var in self.vars.items():
            if var.secret and for_hex:
                out[name] = var.value  # only accepted into secret-class APDUs (checked by the caller)
            elif not var.secret:
                out[name] = var.value
        return out

    def _expand(self, text: str, *, allow_secret: bool = False) -> str:
        """Expand ``${…}``; secret variables only where the result is never shown (``allow_secret``)."""
        if not allow_secret:
            for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text):
                var = self.vars.get(m.group(1))
                if var is not None and var.secret:
                    raise ScriptError(f"${{{m.group(1)}}} comes from a secret source (--var-file, env, prompt) and "
                                      "would be shown here: use --var for values that are not secret")
        return expand_vars(text, self._lookup(for_hex=allow_secret), self._where)

    def display_value(self, var: Variable) -> str:
        if var.secret:
            return "***"
        if var.personal and not self.show_data:
            raw = bytes.fromhex(var.value)
            return f"<{len(raw)} bytes sha256:{hashlib.sha256(raw).hexdigest()[:8]}>"
        return var.value

    def _var_bytes(self, name: str, default: str | None) -> bytes:
        var = self.vars.get(name)
        value = var.value if var is not None else default
        if value is None:
            raise ScriptError(f"variable ${{{name}}} is not set", self._where)
        if var is not None and var.secret:
            raise ScriptError(f"${{{name}}} is a secret and cannot be matched in a pattern", self._where)
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ScriptError(f"variable ${{{name}}} is not hex bytes, so it cannot be used in a pattern",
                              self._where) from None

    def _secret(self, source: str, what: str) -> str:
        """The value of a secret source: ``${NAME}``, ``env:VAR`` or ``prompt``."""
        if source == "prompt":
            if self.prompt is None:
                raise ScriptError(f"{what} is asked by prompt but there is no terminal: use env:VAR or --var-file")
            return self.prompt(what)
        if source.startswith("env:"):
            value = os.environ.get(source[4:])
            if value is None:
                raise ScriptError(f"environment variable {source[4:]} (for {what}) is not set")
            return value
        m = _VAR_ONLY.match(source)
        if not m:
            raise ScriptError(f"{what} must come from ${{NAME}}, env:VAR or prompt")
        var = self.vars.get(m.group(1))
        if var is None:
            raise ScriptError(f"variable ${{{m.group(1)}}} (for {what}) is not set")
        if var.origin not in SECRET_ORIGINS:
            how = "given on the command line (--var)" if var.origin == "argv" else f"from {var.origin}"
            raise ScriptError(f"${{{m.group(1)}}} for {what} was {how}; secrets never come from argv or a script "
                              "literal: use --var-file FILE, env:VAR or prompt")
        return var.value

    def set_variable(self, name: str, value: str, origin: str = "api", *, secret: bool = False) -> None:
        self.vars[name] = Variable(value, origin, secret=secret or origin in ("file", "env", "prompt"))

    # ------------------------------------------------------------------ exchanges
    def _display(self, cmd: CommandApdu, resp: ResponseApdu) -> tuple[str, str]:
        origin = self._origin if cmd.ins == 0xC0 and self._origin is not None else cmd
        if is_secret(origin) or is_secret(cmd) or (not self.show_data and origin.ins in DATA_INS):
            return redact(cmd, resp, origin=origin)
        data = resp.data.hex(" ").upper()
        return cmd.to_bytes().hex(" ").upper(), f"{data + ' ' if data else ''}{resp.sw:04X}"

    def _wire_send(self, cmd: CommandApdu) -> ResponseApdu:
        return ResponseApdu.from_bytes(self.session.transport.transmit(cmd.to_bytes()))

    def exchange(self, stmt: Statement, cmd: CommandApdu, *, raw: bool = False,
                 default: Callable[[ResponseApdu], bool] | None = _success) -> ResponseApdu:
        """Send one logical APDU, report it, check the statement's expectation (or ``default``)."""
        first_wire = len(self._wire)
        t0 = time.perf_counter()
        if raw and self.get_response == "manual" and not self.session.processors:
            resp = self.session.trace.process(cmd, self._wire_send)  # exactly as written, like scriptor
        else:
            resp = self.session.transmit(cmd)
        ms = (time.perf_counter() - t0) * 1000
        self.result.apdus += 1
        c_text, r_text = self._display(cmd, resp)
        if cmd.ins != 0xC0:
            self._origin = cmd
        name = command_name(cmd.header)
        lines = [f"> {c_text}", f"< {r_text}  ({describe(resp.sw)})"]
        decoded = decode_response(cmd, resp) if not is_secret(cmd) or cmd.ins == 0x20 else []
        lines += ["  " + d for d in decoded]
        lines += self._wire_lines(first_wire)
        self._emit("exchange", "\n".join(lines), name=name, command=c_text, response=r_text,
                   sw=f"{resp.sw:04X}", meaning=describe(resp.sw), ms=round(ms, 3), decoded=decoded)
        self._check(stmt, cmd, resp, c_text, r_text, name, default)
        return resp

    def _wire_lines(self, first: int) -> list[str]:
        """The wire exchanges since index ``first`` (redacted like a trace), then forget them."""
        lines: list[str] = []
        if self.show_wire:
            for c, r in self._wire[first:]:
                wc, wr = redact(CommandApdu.from_bytes(c), ResponseApdu.from_bytes(r))
                lines += [f"  wire > {wc}", f"  wire < {wr}"]
        del self._wire[first:]
        return lines

    def _check(self, stmt: Statement, cmd: CommandApdu, resp: ResponseApdu, c_text: str, r_text: str, name: str,
               default: Callable[[ResponseApdu], bool] | None) -> None:
        # Error messages are always redacted, whatever show_data says.
        ec, er = redact(cmd, resp, origin=self._origin if cmd.ins == 0xC0 else None)
        if stmt.expect is not None:
            captures = match_pattern(stmt.expect, resp.to_bytes(), self._var_bytes)
            if captures is None:
                expected = stmt.expect.text
                sw_only = all(a.sw_only for a in stmt.expect.alternatives)
                self._fail(ExpectationFailed(stmt.where, name, expected if sw_only else f"pattern '{expected}'",
                                             ec, resp, er))
                return
            personal = (self._origin or cmd).ins in DATA_INS
            for var, value in captures.items():
                self.vars[var] = Variable(value.hex().upper(), "capture", personal=personal)
                shown = self.display_value(self.vars[var])
                self._emit("capture", f"  ${var} = {shown}", name=var, value=shown)
        elif default is not None and not default(resp):
            self._fail(ExpectationFailed(stmt.where, name, "success (9000)", ec, resp, er))

    def _fail(self, exc: ExpectationFailed) -> None:
        self._emit("failure", str(exc), sw=f"{exc.sw:04X}")
        if not self.continue_on_failure:
            raise exc
        self.result.failures.append(exc)

    # ------------------------------------------------------------------ statements
    def _do_apdu(self, stmt: Statement) -> None:
        template = stmt.args[0]
        refs = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", template)
        text = expand_vars(template, self._lookup(for_hex=True), stmt.where)
        try:
            raw = bytes.fromhex(text)
            cmd = CommandApdu.from_bytes(raw)
        except ValueError as exc:
            raise ScriptError(f"APDU {self._masked_template(template)} is not valid after expansion: {exc}") from None
        if any(self.vars[r].secret for r in refs if r in self.vars) and not is_secret(cmd):
            raise ScriptError(f"a secret variable is used in APDU {cmd.header.hex().upper()}, which is not a "
                              "VERIFY/authentication/PUT KEY command: it would be shown")
        self.exchange(stmt, cmd, raw=True, default=None)

    def _masked_template(self, template: str) -> str:
        return re.sub(r"\$\{[^}]*\}", "${…}", template)

    def _do_reset(self, stmt: Statement) -> None:
        cold = bool(stmt.args) and stmt.args[0].lower() == "cold"
        atr = self.session.reset(cold)
        self.fs.cwd = ["3F00"]
        self._emit("reset", f"reset ({'cold' if cold else 'warm'}): ATR {atr.hex(' ').upper()}", atr=atr.hex().upper())

    def _do_exit(self, stmt: Statement) -> bool:
        return False

    def _do_echo(self, stmt: Statement) -> None:
        def sub(m: re.Match[str]) -> str:
            var = self.vars.get(m.group(1))
            if var is None:
                if m.group(2) is not None:
                    return m.group(2)
                raise ScriptError(f"variable ${{{m.group(1)}}} is not set")
            return self.display_value(var)

        text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", sub, stmt.args[0] if stmt.args else "")
        self._emit("echo", text, message=text)

    def _do_set(self, stmt: Statement) -> None:
        name, value = stmt.args
        if value.startswith("env:"):
            self.set_variable(name, self._secret(value, name), "env")
        elif value == "prompt":
            self.set_variable(name, self._secret(value, name), "prompt")
        else:
            refs = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", value)
            secret = any(self.vars[r].secret for r in refs if r in self.vars)
            self.set_variable(name, self._expand(value, allow_secret=True), "script", secret=secret)

    def _do_option(self, stmt: Statement) -> None:
        for key, value in stmt.params.items():
            if key == "get-response":
                self.get_response = value

    def _do_select(self, stmt: Statement) -> None:
        target = resolve_target(self._expand(stmt.args[0]), self.fs, stmt.params.get("fci"))
        resp = self.exchange(stmt, target.command, default=_success_or_warning)
        if _success_or_warning(resp):
            is_df: bool | None = None
            if resp.data:
                try:
                    is_df = iso.parse_fcp(resp.data).is_df
                except CardkitError:
                    is_df = None
            self.fs.moved(target, True if target.kind == "aid" else is_df)

    def _do_read(self, stmt: Statement) -> None:
        nums = [int(x, 16) if x.lower().startswith("0x") else int(x) for x in
                (self._expand(a) for a in stmt.args[1:])]
        if stmt.args[0] == "record":
            self.exchange(stmt, iso.read_record(nums[0]))
        else:
            offset = nums[0] if nums else 0
            self.exchange(stmt, iso.read_binary(offset, nums[1] if len(nums) > 1 else None),
                          default=_success_or_warning)

    def _do_verify(self, stmt: Statement) -> None:
        ref = int(self._expand(stmt.args[1]), 16)
        if len(stmt.args) == 3 and stmt.args[2].lower() == "status":
            self.exchange(stmt, iso.verify(ref, None),
                          default=lambda r: r.sw == 0x9000 or r.sw & 0xFFF0 == 0x63C0 or r.sw == 0x6983)
            return
        value = self._secret(stmt.args[2] if len(stmt.args) == 3 else "prompt", f"PIN {ref:02X}")
        self.exchange(stmt, iso.verify(ref, _encode_pin(value, stmt.params.get("format", "ascii"))))

    def _need_keystore(self, what: str) -> Keystore:
        if self.keystore is None:
            raise KeystoreError(f"{what} needs keys: give --keys FILE (TEST key files also need --allow-test-keys)")
        return self.keystore

    def _params(self, stmt: Statement) -> dict[str, str]:
        """Parameters of open/auth, expanded; they are never printed, so secret variables may be used."""
        return {k: self._expand(v, allow_secret=True) for k, v in stmt.params.items()}

    def _do_open(self, stmt: Statement) -> None:
        what = stmt.args[0]
        self._do_close(stmt, quiet=True)
        first = len(self._wire)
        if what in ("scp03", "scp02"):
            params = self._params(stmt)
            _, summary = open_gp(self.session, what, params, self._need_keystore(f"open {what}"), self.replay)
        elif what == "sm":
            params = self._params(stmt)
            _, summary = open_sm(self.session, params, self._need_keystore("open sm"), self.replay)
        else:
            params = dict(stmt.params)
            if "mrz" in params:
                mrz = self._secret(params["mrz"], "the MRZ information")
            else:
                from cardkit.sm.bac import mrz_information

                mrz = mrz_information(*(self._secret(params[k], f"the MRZ field {k}") for k in ("doc", "dob", "doe")))
            _, summary = open_bac(self.session, mrz.strip().upper(), self.replay)
        self._emit("info", "\n".join([summary, *self._wire_lines(first)]), channel=what)

    def _do_auth(self, stmt: Statement) -> None:
        from cardkit.sm.auth import external_authenticate

        params = self._params(stmt)
        keystore = self._need_keystore("auth external")
        alg = resolve_alg(keystore, params["key"], params.get("alg"))
        key = sm_key(keystore, params["key"], alg, params.get("diversify", ""), self.session.atr)
        ref = int(params["ref"], 16)
        first = len(self._wire)
        external_authenticate(self.session.transmit, alg, key, ref)
        self._emit("info", "\n".join([f"external authentication with key {params['key']!r} reference {ref:02X}: "
                                      "accepted", *self._wire_lines(first)]))

    def _do_close(self, stmt: Statement, quiet: bool = False) -> None:
        procs = self.session.processors
        for proc in procs:
            close = getattr(proc, "close", None)
            if callable(close):
                close()
            self.session.remove(proc)
        if procs and not quiet:
            self._emit("info", f"closed {len(procs)} secure channel(s)")

    def _do_profile(self, stmt: Statement) -> None:
        from cardkit.profiles.model import find_profile, load_profile

        self.fs.profile = load_profile(find_profile(self._expand(stmt.args[0])))
        self._emit("info", f"profile {self.fs.profile.name}: {len(self.fs.profile.files)} files")

    def _do_ls(self, stmt: Statement) -> None:
        scan = None
        if stmt.args:
            lo, hi = stmt.args[1].split("-")
            scan = (int(lo, 16), int(hi, 16))
        lines = self.fs.ls(self.session, scan)
        self._emit("info", "\n".join(lines), files=lines)

    def _do_cd(self, stmt: Statement) -> None:
        target = resolve_target(self._expand(stmt.args[0]), self.fs)
        data = self.session.send(target.command, context={"file": stmt.args[0]}, allow_warnings=True).data
        is_df = None
        if data:
            try:
                is_df = iso.parse_fcp(data).is_df
            except CardkitError:
                is_df = None
        if is_df is False:
            raise ScriptError(f"{stmt.args[0]} is an EF: use 'cat {stmt.args[0]}'")
        self.fs.moved(target, True)
        self._emit("info", self.fs.display(), cwd=self.fs.display())

    def _do_cat(self, stmt: Statement) -> None:
        lines = self.fs.cat(self.session, self._expand(stmt.args[0]), show_data=self.show_data)
        self._emit("info", "\n".join(lines), lines=lines)

    def _do_pwd(self, stmt: Statement) -> None:
        self._emit("info", self.fs.display(), cwd=self.fs.display())


def _encode_pin(value: str, fmt: str) -> bytes:
    """PIN bytes: ``ascii`` (digits as characters, as cardkit's SSC profile loads them), ``bcd`` (packed digits
    padded with F, ISO 9564 style), ``hex`` (bytes as given)."""
    value = value.strip()
    if not value:
        raise ScriptError("the PIN is empty")
    if fmt == "ascii":
        try:
            return value.encode("ascii")
        except UnicodeEncodeError:
            raise ScriptError("the PIN holds non-ASCII characters") from None
    if fmt == "bcd":
        if not value.isdigit():
            raise ScriptError("a BCD PIN holds digits only")
        return bytes.fromhex(value + "F" * (len(value) % 2))
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ScriptError("a hex PIN must be hex bytes") from None
