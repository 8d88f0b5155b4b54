"""Transports: how a :class:`~cardkit.session.CardSession` reaches a card.

:func:`open_transport` turns a user-facing spec into a transport:

* ``replay:FILE`` — a recorded JSON transcript (:class:`~cardkit.transport.replay.ReplayTransport`);
* ``pcsc:NAME`` or just ``NAME`` — a PC/SC reader, matched like
  :func:`~cardkit.transport.pcsc.find_reader` (exact name, index, or unique case-insensitive substring).

More schemes (``virtual``, ``virtual:IMAGE``…) plug in with :func:`register_scheme`. Backends are imported
only when used, so ``import cardkit`` does not load pyscard.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from cardkit.errors import TransportError
from cardkit.transport.base import Transport

__all__ = ["Transport", "TransportFactory", "open_transport", "register_scheme", "schemes"]

#: A scheme factory gets the part of the spec after ``scheme:`` (possibly empty) and returns a transport.
TransportFactory = Callable[[str], Transport]

_SCHEME_NAME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def _pcsc(rest: str) -> Transport:
    from cardkit.transport.pcsc import PcscTransport

    if not rest:
        raise TransportError("pcsc: needs a reader name or number, e.g. pcsc:0")
    return PcscTransport(rest)


def _replay(rest: str) -> Transport:
    from cardkit.transport.replay import ReplayTransport

    if not rest:
        raise TransportError("replay: needs a transcript file, e.g. replay:session.json")
    return ReplayTransport(rest)


_schemes: dict[str, TransportFactory] = {"pcsc": _pcsc, "replay": _replay}


def register_scheme(name: str, factory: TransportFactory, *, replace: bool = False) -> None:
    """Make ``open_transport("NAME:...")`` call ``factory("...")`` (and ``open_transport("NAME")`` call
    ``factory("")``). Re-registering a taken name needs ``replace=True``."""
    if not _SCHEME_NAME.match(name):
        raise TransportError(f"scheme name must be lowercase letters/digits/+.- and start with a letter: {name!r}")
    if name in _schemes and not replace:
        raise TransportError(f"transport scheme {name!r} is already registered")
    _schemes[name] = factory


def schemes() -> tuple[str, ...]:
    """The registered scheme names."""
    return tuple(sorted(_schemes))


def open_transport(spec: str) -> Transport:
    """Open the transport ``spec`` names (see the module docstring). Anything that is not
    ``SCHEME:REST`` or a bare registered scheme name is a PC/SC reader name."""
    spec = spec.strip()
    if not spec:
        raise TransportError("empty transport spec: give a reader name or number, or replay:FILE")
    scheme, sep, rest = spec.partition(":")
    if scheme in _schemes and (sep or scheme != "pcsc"):
        return _schemes[scheme](rest)
    return _pcsc(spec)
