"""The APDU script language: a superset of pcsc-tools' ``scriptor`` files.

A script is read line by line. Everything a ``scriptor`` file holds runs unchanged:

* hex APDUs (``00 A4 04 00 07 A0 00 00 00 03 10 10`` — spaces optional, any case);
* ``reset``; ``exit``; ``#`` comment lines; a ``\\`` at the end of a line continues it on the next.

Hex lines are sent exactly as written, as ``scriptor`` does: a ``61xx`` or ``6Cxx`` answer is shown as it is
and the script may follow it with its own GET RESPONSE. ``option get-response=auto`` makes cardkit complete
such answers itself (ISO 7816-4:2020 §7.6.1, ISO 7816-3:2006 §12.2.2). Named commands always get complete
responses, and every APDU goes through an open secure channel.

cardkit adds (``KEYWORD`` case-insensitive; numbers are decimal or ``0x`` hex, references are hex bytes):

=============================================  ==================================================================
``HEX [=> PATTERN]``                           expected status word / response pattern (below)
``apdu HEX [=> PATTERN]``                      the same (needed when the APDU's CLA is ``CD``: ``cd`` is a command)
``echo TEXT``                                  print TEXT (``${NAME}`` expanded; secret variables never shown)
``set NAME=VALUE``                             define a variable; VALUE may be ``env:VAR`` or ``prompt`` (secret)
``option get-response=auto|manual``            complete ``61xx``/``6Cxx`` answers to hex lines (default: manual)
``select TARGET [fci=fcp|fci|none]``           ``MF``, ``..``, ``FID``, ``aid:HEX`` (or 5-16 hex bytes),
                                               ``ef:FID``, ``df:FID``, ``/FID/FID`` (path from the MF),
                                               ``FID/FID`` (path from the current DF), or a profile path
``read binary [OFFSET [LENGTH]]``              READ BINARY (Le 00 unless LENGTH)
``read record N``                              READ RECORD N of the current EF
``verify pin REF SOURCE [format=ascii|bcd|hex]``  VERIFY; SOURCE is ``${NAME}``, ``env:VAR`` or ``prompt``
``verify pin REF status``                      VERIFY without data: tries left (no PIN is sent)
``open scp03 keyset=NAME [level=01] [kvn=HEX] [s16=yes] [sd=AID] [diversify=none|kdf3]``
``open scp02 keyset=NAME [level=01] [kvn=HEX] [i=55] [diversify=none|emv|visa2]``
``open bac mrz=SOURCE`` (or ``doc=.. dob=YYMMDD doe=YYMMDD``, each a SOURCE)
``open sm key=NAME [ref=00] [alg=sm4|3des|aes] [diversify=serial,HEX,...]``  cardkit's ISO mutual authentication
``auth external key=NAME ref=HEX [alg=..] [diversify=..]``  GET CHALLENGE + EXTERNAL AUTHENTICATE
``close``                                      drop the open secure channels
``include FILE``                               run another script (path relative to this one)
``profile NAME``                               use a profile's file names (``select SSSE/EF05``, ``cat``, ``ls``)
``ls [scan FROM-TO]``, ``cd TARGET``, ``cat TARGET``, ``pwd``   browse the card's file system (decoded views)
=============================================  ==================================================================

Secrets (PINs, the MRZ) are never written in a script: a literal PIN is a parse error. ``${NAME}`` of a
variable given on the command line (``--var``) is refused for them too — secrets come from ``--var-file``,
the environment, or a prompt, and never appear in output, traces or errors.

**Patterns** (``=> ...``) match the response data followed by SW1 SW2. Tokens: hex bytes, where ``?`` is
a wildcard nibble (``6F``, ``61??``, ``A0000001510000``); ``*`` any number of bytes; ``$NAME:N`` captures N
bytes into variable NAME (``$NAME:*`` captures any number); ``${NAME}`` the bytes of a variable. A pattern of
exactly two bytes checks only the status word (``=> 9000``, ``=> 63C?``). Alternatives are separated by ``|``
(``=> 9000 | 6A82``). A hex line without a pattern is not checked (``scriptor`` semantics); a named command
without a pattern must succeed (9000, or a 62xx warning for SELECT and READ BINARY).

Variables: ``${NAME}`` (``${NAME:-DEFAULT}`` when unset) in hex, parameters, targets and echo text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cardkit.apdu import CommandApdu
from cardkit.errors import ApduFormatError, ParseError

__all__ = [
    "KEYWORDS", "Alternative", "Location", "Pattern", "ScriptError", "Statement", "expand_vars", "parse_file",
    "parse_pattern", "parse_text", "split_hex_template",
]

#: Words that start a cardkit statement (anything else must be a hex APDU).
KEYWORDS = frozenset({
    "apdu", "auth", "cat", "cd", "close", "echo", "exit", "include", "ls", "open", "option", "profile", "pwd",
    "quit", "read", "reset", "select", "set", "verify",
})
#: Parameters each ``open`` kind accepts.
OPEN_PARAMS: Mapping[str, frozenset[str]] = {
    "scp03": frozenset({"keyset", "level", "kvn", "s16", "sd", "diversify", "counter-quirk"}),
    "scp02": frozenset({"keyset", "level", "kvn", "i", "diversify"}),
    "bac": frozenset({"mrz", "doc", "dob", "doe"}),
    "sm": frozenset({"key", "ref", "alg", "diversify"}),
}
_AUTH_PARAMS = frozenset({"key", "ref", "alg", "diversify"})
_SELECT_PARAMS = frozenset({"fci"})
_VERIFY_PARAMS = frozenset({"format"})
#: ``option`` names and their allowed values.
OPTIONS: Mapping[str, frozenset[str]] = {"get-response": frozenset({"auto", "manual"})}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR_RE = re.compile(r"\$\{(" + _NAME + r")(?::-([^}]*))?\}")
_NAME_RE = re.compile(_NAME + r"\Z")
_HEX_RE = re.compile(r"[0-9A-Fa-f]*\Z")
_MAX_INCLUDE_DEPTH = 16


class ScriptError(ParseError):
    """A script that cannot be parsed (or a statement that cannot run as written). Names file:line."""

    def __init__(self, message: str, where: Location | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a statement comes from: file (as given) and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Alternative:
    """One alternative of a pattern: tokens ``("hex", "6F??")``, ``("star",)``, ``("cap", NAME, N|None)``,
    ``("var", NAME, DEFAULT|None)``. ``sw_only`` when it is exactly two bytes of hex (status word check)."""

    tokens: tuple[tuple[object, ...], ...]
    sw_only: bool


@dataclass(frozen=True, slots=True)
class Pattern:
    """An expectation ``=> ...``: alternatives tried in order; the first that matches wins."""

    alternatives: tuple[Alternative, ...]
    text: str

    @property
    def captures(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(t[1]) for a in self.alternatives for t in a.tokens if t[0] == "cap"))


@dataclass(frozen=True, slots=True)
class Statement:
    """One parsed statement. ``kind`` is the keyword (``apdu`` for hex lines); ``args`` the positional words;
    ``params`` the ``key=value`` words; ``expect`` the pattern; ``text`` the source text (comments removed)."""

    kind: str
    where: Location
    text: str
    args: tuple[str, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    expect: Pattern | None = None


# ------------------------------------------------------------------------------------------ variables


def expand_vars(text: str, lookup: Mapping[str, str], where: Location | None = None) -> str:
    """Replace ``${NAME}`` / ``${NAME:-DEFAULT}`` using ``lookup``; an unset variable without default is an error."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in lookup:
            return lookup[name]
        if default is not None:
            return default
        raise ScriptError(f"variable ${{{name}}} is not set (give --var {name}=..., --var-file, or 'set')", where)

    return _VAR_RE.sub(sub, text)


def split_hex_template(text: str, where: Location) -> str:
    """Validate a hex APDU template (hex digits, spaces, ``${...}``) and return it without spaces."""
    compact = "".join(text.split())
    plain = _VAR_RE.sub("", compact)
    if not _HEX_RE.match(plain):
        bad = next(ch for ch in plain if ch not in "0123456789abcdefABCDEF")
        raise ScriptError(f"{bad!r} is not a hex digit in APDU {text.strip()!r} (unknown command?)", where)
    return compact


def check_apdu_hex(compact: str, where: Location) -> None:
    """A hex APDU without variables must parse as a C-APDU (ISO 7816-3:2006 §12.1)."""
    if _VAR_RE.search(compact):
        return
    if len(compact) % 2:
        raise ScriptError(f"APDU has an odd number of hex digits ({len(compact)})", where)
    try:
        CommandApdu.from_bytes(bytes.fromhex(compact))
    except ApduFormatError as exc:
        raise ScriptError(f"malformed APDU {compact.upper()}: {exc}", where) from None


# ------------------------------------------------------------------------------------------- patterns

_CAP_RE = re.compile(r"\$(" + _NAME + r"):(\d+|\*)\Z")
_PAT_HEX_RE = re.compile(r"[0-9A-Fa-f?]+\Z")


def parse_pattern(text: str, where: Location) -> Pattern:
    """Parse the text after ``=>``."""
    alternatives: list[Alternative] = []
    for alt_text in text.split("|"):
        seen: set[str] = set()
        tokens: list[tuple[object, ...]] = []
        for tok in alt_text.split():
            if tok == "*":
                tokens.append(("star",))
                continue
            m = _CAP_RE.match(tok)
            if m:
                name = m.group(1)
                if name in seen:
                    raise ScriptError(f"pattern captures ${name} twice", where)
                seen.add(name)
                n = None if m.group(2) == "*" else int(m.group(2))
                if n == 0:
                    raise ScriptError(f"capture ${name}:0 captures nothing", where)
                tokens.append(("cap", name, n))
                continue
            if tok.startswith("$") and not tok.startswith("${"):
                raise ScriptError(f"capture {tok!r} needs a length: ${tok[1:]}:N or ${tok[1:]}:*", where)
            for part in re.split(r"(\$\{[^}]*\})", tok):
                if not part:
                    continue
                vm = _VAR_RE.fullmatch(part)
                if vm:
                    tokens.append(("var", vm.group(1), vm.group(2)))
                elif _PAT_HEX_RE.match(part) and len(part) % 2 == 0:
                    tokens.append(("hex", part.upper()))
                else:
                    raise ScriptError(
                        f"pattern token {part!r} is not hex bytes (use ? for a wildcard nibble), '*', "
                        "$NAME:N or ${NAME}", where)
        if not tokens:
            raise ScriptError(f"empty pattern alternative in '=> {text.strip()}'", where)
        sw_only = all(t[0] == "hex" for t in tokens) and sum(len(str(t[1])) for t in tokens) == 4
        if not _ends_with_sw(tokens):
            raise ScriptError(f"pattern '{alt_text.strip()}' must end with the status word (2 bytes, SW1 6X or "
                              "9X, e.g. 9000 or 61??)", where)
        alternatives.append(Alternative(tuple(tokens), sw_only))
    return Pattern(tuple(alternatives), text.strip())


def _ends_with_sw(tokens: list[tuple[object, ...]]) -> bool:
    """The last two bytes are a status word: SW1 is 6X or 9X (ISO 7816-3:2006 §10.3.2), or a wildcard."""
    tail = ""
    for tok in reversed(tokens):
        if tok[0] != "hex":
            return tok[0] == "var" and not tail  # a variable holding the status word
        tail = str(tok[1]) + tail
        if len(tail) >= 4:
            return tail[-4] in "69?"
    return False


# ------------------------------------------------------------------------------------------ lines


def _logical_lines(text: str, source: str, first_line: int) -> list[tuple[int, str]]:
    """Join ``\\`` continuations; return (line number of the first physical line, text)."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = first_line
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        n = first_line + i
        line = raw.rstrip()
        if not buf:
            start = n
        if line.endswith("\\") and not line.lstrip().startswith("#"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        out.append((start, " ".join(b.strip() for b in buf)))
        buf = []
    if buf:
        raise ScriptError("the last line ends with '\\' but no line follows", Location(source, start))
    return out


def _strip_comment(line: str) -> str:
    """Remove a trailing ``# comment`` (a ``#`` after whitespace)."""
    m = re.search(r"\s#", line)
    return line[: m.start()].rstrip() if m else line


def _words(text: str) -> tuple[list[str], dict[str, str]]:
    args: list[str] = []
    params: dict[str, str] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if eq and _NAME_RE.match(key.replace("-", "_")):
            params[key.lower()] = value
        else:
            args.append(word)
    return args, params


def _check_params(kind: str, params: Mapping[str, str], known: frozenset[str], where: Location) -> None:
    for key in params:
        if key not in known:
            raise ScriptError(f"{kind}: unknown parameter {key!r} (known: {', '.join(sorted(known))})", where)


def _number(text: str, what: str, lo: int, hi: int, where: Location) -> int:
    if _VAR_RE.search(text):
        return lo
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise ScriptError(f"{what} must be a number (decimal or 0x hex), got {text!r}", where) from None
    if not lo <= value <= hi:
        raise ScriptError(f"{what} must be {lo}..{hi}, got {value}", where)
    return value


def _hex_byte(text: str, what: str, where: Location) -> None:
    if _VAR_RE.search(text):
        return
    if not re.fullmatch(r"[0-9A-Fa-f]{2}", text):
        raise ScriptError(f"{what} must be one hex byte (e.g. 81), got {text!r}", where)


def check_secret_source(text: str, what: str, where: Location) -> None:
    """A secret is ``${NAME}``, ``env:VAR`` or ``prompt`` — never a literal in the script."""
    if text == "prompt" or re.fullmatch(r"\$\{" + _NAME + r"\}", text) or re.fullmatch(r"env:" + _NAME, text):
        return
    raise ScriptError(f"{what} is never written in a script or typed on a command line: use ${{NAME}} "
                      "(from --var-file), env:VAR or prompt", where)


def _parse_statement(kind: str, rest: str, expect: Pattern | None, where: Location, text: str) -> Statement:
    args, params = _words(rest)

    def stmt() -> Statement:
        return Statement(kind, where, text, tuple(args), params, expect)

    def no_expect() -> None:
        if expect is not None:
            raise ScriptError(f"'{kind}' sends no APDU of its own to check: remove '=> {expect.text}'", where)

    if kind in ("exit", "quit", "close", "pwd"):
        no_expect()
        if args or params:
            raise ScriptError(f"'{kind}' takes no arguments", where)
        return Statement("exit" if kind == "quit" else kind, where, text)
    if kind == "reset":
        no_expect()
        if params or len(args) > 1 or (args and args[0].lower() not in ("cold", "warm")):
            raise ScriptError("reset takes nothing, 'warm' or 'cold'", where)
        return stmt()
    if kind == "set":
        no_expect()
        name, eq, value = rest.strip().partition("=")
        name = name.strip()
        if not eq or not _NAME_RE.match(name):
            raise ScriptError("set needs NAME=VALUE (NAME: letters, digits, _)", where)
        return Statement(kind, where, text, (name, value.strip()))
    if kind == "option":
        no_expect()
        if args or len(params) != 1:
            raise ScriptError(f"option needs one NAME=VALUE ({', '.join(sorted(OPTIONS))})", where)
        (key, value), = params.items()
        if key not in OPTIONS:
            raise ScriptError(f"unknown option {key!r} (known: {', '.join(sorted(OPTIONS))})", where)
        if value.lower() not in OPTIONS[key]:
            raise ScriptError(f"option {key} takes {'|'.join(sorted(OPTIONS[key]))}, got {value!r}", where)
        return Statement(kind, where, text, (), {key: value.lower()})
    if kind == "apdu":
        if params or not args:
            raise ScriptError("apdu needs hex bytes", where)
        compact = split_hex_template(" ".join(args), where)
        check_apdu_hex(compact, where)
        return Statement(kind, where, text, (compact,), {}, expect)
    if kind in ("select", "cd", "cat"):
        if len(args) != 1:
            raise ScriptError(f"{kind} needs one target (MF, .., FID, aid:HEX, ef:FID, /PATH or a name)", where)
        _check_params(kind, params, _SELECT_PARAMS if kind == "select" else frozenset(), where)
        if params.get("fci", "fcp") not in ("fcp", "fci", "none"):
            raise ScriptError(f"fci takes fcp|fci|none, got {params['fci']!r}", where)
        if kind != "select":
            no_expect()
        return stmt()
    if kind == "read":
        _check_params(kind, params, frozenset(), where)
        if not args or args[0].lower() not in ("binary", "record"):
            raise ScriptError("read binary [OFFSET [LENGTH]] or read record N", where)
        what = args[0].lower()
        if what == "record":
            if len(args) != 2:
                raise ScriptError("read record needs the record number", where)
            _number(args[1], "record number", 1, 254, where)  # ISO 7816-4:2020 §11.4.3: 01..FE
        else:
            if len(args) > 3:
                raise ScriptError("read binary takes at most OFFSET and LENGTH", where)
            if len(args) > 1:
                _number(args[1], "offset", 0, 0x7FFF, where)  # ISO 7816-4:2020 §11.3.3: 15-bit offset
            if len(args) > 2:
                _number(args[2], "length", 1, 65536, where)
        args[0] = what
        return stmt()
    if kind == "verify":
        _check_params(kind, params, _VERIFY_PARAMS, where)
        if len(args) < 2 or args[0].lower() != "pin" or len(args) > 3:
            raise ScriptError("verify pin REF (${NAME}|env:VAR|prompt|status)", where)
        _hex_byte(args[1], "PIN reference (P2)", where)
        if len(args) == 3 and args[2].lower() != "status":
            check_secret_source(args[2], "a PIN", where)
        if params.get("format", "ascii") not in ("ascii", "bcd", "hex"):
            raise ScriptError(f"format takes ascii|bcd|hex, got {params['format']!r}", where)
        return stmt()
    if kind == "open":
        if len(args) != 1 or args[0].lower() not in OPEN_PARAMS:
            raise ScriptError(f"open {' | '.join(sorted(OPEN_PARAMS))} with key=value parameters", where)
        what = args[0].lower()
        no_expect()
        _check_params(f"open {what}", params, OPEN_PARAMS[what], where)
        required = {"scp03": ("keyset",), "scp02": ("keyset",), "sm": ("key",), "bac": ()}[what]
        for key in required:
            if key not in params:
                raise ScriptError(f"open {what} needs {key}=NAME", where)
        if what == "bac":
            if "mrz" in params:
                check_secret_source(params["mrz"], "the MRZ information", where)
            elif {"doc", "dob", "doe"} <= set(params):
                for key in ("doc", "dob", "doe"):
                    check_secret_source(params[key], f"the MRZ field {key}", where)
            else:
                raise ScriptError("open bac needs mrz=SOURCE or doc=, dob=, doe=", where)
        for key in ("kvn", "ref", "i"):
            if key in params:
                _hex_byte(params[key], {"kvn": "key version number", "ref": "key reference", "i": "i parameter"}[key],
                          where)
        if "level" in params:
            _hex_byte(params["level"], "security level", where)
        args[0] = what
        return stmt()
    if kind == "auth":
        no_expect()
        if args != ["external"]:
            raise ScriptError("auth external key=NAME ref=HEX [alg=..] [diversify=..]", where)
        _check_params("auth external", params, _AUTH_PARAMS, where)
        if "key" not in params or "ref" not in params:
            raise ScriptError("auth external needs key=NAME and ref=HEX", where)
        _hex_byte(params["ref"], "key reference", where)
        return stmt()
    if kind == "include":
        no_expect()
        if len(args) != 1 or params:
            raise ScriptError("include needs one file name", where)
        return stmt()
    if kind == "profile":
        no_expect()
        if len(args) != 1 or params:
            raise ScriptError("profile needs a profile name or path", where)
        return stmt()
    if kind == "ls":
        no_expect()
        if params or (args and (len(args) != 2 or args[0].lower() != "scan"
                                or not re.fullmatch(r"[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}", args[1]))):
            raise ScriptError("ls, or ls scan FROM-TO (FIDs, e.g. ls scan EF00-EF1F)", where)
        return stmt()
    raise ScriptError(f"unknown command {kind!r}", where)  # pragma: no cover - KEYWORDS and this agree


def parse_line(line: str, where: Location) -> Statement | None:
    """Parse one logical line (continuations joined); None for blank and comment lines."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    first, _, rest = stripped.partition(" ")
    kind = first.lower()
    if kind == "echo":
        return Statement("echo", where, stripped, (rest.strip(),))
    body = _strip_comment(stripped)
    if kind == "set":
        return _parse_statement(kind, body.partition(" ")[2], None, where, body)
    expect: Pattern | None = None
    if "=>" in body:
        body, _, pattern = body.partition("=>")
        body = body.rstrip()
        expect = parse_pattern(pattern, where)
    first, _, rest = body.partition(" ")
    kind = first.lower()
    if kind in KEYWORDS:
        return _parse_statement(kind, rest, expect, where, stripped)
    if not _HEX_RE.match(_VAR_RE.sub("", first)):
        raise ScriptError(f"unknown command {first!r}: not a cardkit command and not hex bytes", where)
    compact = split_hex_template(body, where)
    check_apdu_hex(compact, where)
    return Statement("apdu", where, stripped, (compact,), {}, expect)


def parse_text(text: str, source: str = "<script>", *, base_dir: str | os.PathLike[str] | None = None,
               first_line: int = 1, _stack: tuple[Path, ...] = ()) -> list[Statement]:
    """Parse a script; ``include`` statements are replaced by the statements of the included file."""
    out: list[Statement] = []
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    for n, line in _logical_lines(text, source, first_line):
        where = Location(source, n)
        stmt = parse_line(line, where)
        if stmt is None:
            continue
        if stmt.kind == "include":
            if len(stmt.args) != 1 or stmt.params or stmt.expect is not None:
                raise ScriptError("include needs one file name", where)
            out.extend(_include(base / stmt.args[0], where, _stack))
            continue
        out.append(stmt)
    return out


def _include(path: Path, where: Location, stack: tuple[Path, ...]) -> list[Statement]:
    resolved = path.resolve()
    if resolved in stack:
        raise ScriptError(f"include {path} would include itself (cycle)", where)
    if len(stack) >= _MAX_INCLUDE_DEPTH:
        raise ScriptError(f"includes nested deeper than {_MAX_INCLUDE_DEPTH}", where)
    return parse_file(path, _stack=(*stack, resolved), _where=where)


def parse_file(path: str | os.PathLike[str], *, _stack: tuple[Path, ...] = (),
               _where: Location | None = None) -> list[Statement]:
    """Parse a script file (UTF-8)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScriptError(f"script {os.fspath(path)!r} not found", _where) from None
    except UnicodeDecodeError as exc:
        raise ScriptError(f"script {os.fspath(path)!r} is not UTF-8 text (byte {exc.start})", _where) from None
    except OSError as exc:
        raise ScriptError(f"cannot read script {os.fspath(path)!r}: {exc.strerror}", _where) from None
    stack = _stack or (p.resolve(),)
    return parse_text(text, os.fspath(path), base_dir=p.parent, _stack=stack)
