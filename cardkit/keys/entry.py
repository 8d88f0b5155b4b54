"""Where secrets come from: environment variables or a prompt, never the command line.

The library does not prompt by itself: callers (the CLI) pass a :data:`Prompt` — a function that asks the
operator with echo off and returns the text. Without one, a secret that is not in its environment variable
is a :class:`~cardkit.errors.KeystoreError` naming the variable.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from cardkit.errors import KeystoreError

__all__ = [
    "COMPONENT_ENV",
    "PASSPHRASE_ENV",
    "PIN_ENV",
    "Prompt",
    "obtain_secret",
    "parse_hex_secret",
    "read_secret_file",
]

#: A prompt: ``prompt(question)`` asks the operator (echo off) and returns the answer.
Prompt = Callable[[str], str]

PASSPHRASE_ENV = "CARDKIT_KEYSTORE_PASSPHRASE"  # noqa: S105 - the NAME of the variable, not a secret
PIN_ENV = "CARDKIT_PKCS11_PIN"
#: Key components of an import ceremony: CARDKIT_KEY_COMPONENT_1, _2, _3.
COMPONENT_ENV = "CARDKIT_KEY_COMPONENT_{n}"

log = logging.getLogger(__name__)

_HEX_CLEAN = re.compile(r"[\s:]")


def obtain_secret(what: str, env: str | None, prompt: Prompt | None) -> str:
    """The secret ``what`` from the environment variable ``env``, else from ``prompt``.

    An empty answer is refused. Errors name the variable, never the value.
    """
    if env:
        value = os.environ.get(env)
        if value is not None:
            if not value:
                raise KeystoreError(f"{what}: environment variable {env} is set but empty")
            return value
    if prompt is None:
        hint = f"set {env} or run interactively" if env else "run interactively"
        raise KeystoreError(f"no {what} given: {hint} (secrets are never taken from the command line)")
    value = prompt(what)
    if not value:
        raise KeystoreError(f"no {what} entered")
    return value


def parse_hex_secret(text: str, what: str) -> bytes:
    """Hex text (spaces and colons allowed) → bytes; the error names ``what``, never the text."""
    cleaned = _HEX_CLEAN.sub("", text)
    if not cleaned or len(cleaned) % 2 or not re.fullmatch(r"[0-9A-Fa-f]+", cleaned):
        raise KeystoreError(f"{what} is not hexadecimal bytes ({len(cleaned)} characters after removing "
                            "spaces)")
    return bytes.fromhex(cleaned)


def read_secret_file(path: str | Path, what: str) -> str:
    """The first line of a file holding a secret (a PIN file, a key file in hex)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeystoreError(f"cannot read {what} file {p}: {exc.strerror}") from None
    mode = p.stat().st_mode & 0o077
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not line:
        raise KeystoreError(f"{what} file {p} is empty")
    if mode:
        log.warning("%s file %s is readable by group/others (mode %03o); use 0600",
                                            what, p.name, p.stat().st_mode & 0o777)
    return line
