"""The readers of a batch station and the card images it keeps.

A :class:`CardSlot` is one reader: :class:`VirtualSlot` hands out fresh blank virtual cards from a
:class:`~cardkit.virtual.image.CardFeeder` (in-process, no PC/SC), :class:`PcscSlot` waits for a card to be
inserted in a PC/SC reader and, after each card, for its removal. :class:`ImageStore` keeps the images of
virtual cards: written as ``.pending-<serial>.json`` before the card is marked verified and renamed to
``<serial>.json`` after, so ``cards/*.json`` are exactly the verified cards; images of spoiled cards go to
``cards/spoiled/``. Images hold card keys: files are 0600.

The runner (:mod:`cardkit.batch.runner`) re-exports every name here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol, cast

from cardkit.batch.ledger import Ledger
from cardkit.batch.ledger_model import LedgerError
from cardkit.errors import TransportError
from cardkit.keys.store import Keystore, alg_of
from cardkit.profiles.model import Profile
from cardkit.session import CardSession

if TYPE_CHECKING:
    from cardkit.virtual.card import VirtualCard
    from cardkit.virtual.image import CardFeeder

__all__ = ["CardSlot", "ImageStore", "PcscSlot", "TraceSink", "VirtualSlot", "make_feeder"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- images
class ImageStore:
    """Card images of a run (see the module docstring). Images hold the card keys: files are 0600."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.spoiled_dir = directory / "spoiled"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.spoiled_dir.mkdir(exist_ok=True, mode=0o700)

    def _pending(self, serial: str) -> Path:
        return self.dir / f".pending-{serial}.json"

    def stage(self, card: VirtualCard, serial: str) -> None:
        card.options = dataclasses.replace(card.options, apdu_latency_s=0.0)  # no latency when inspected
        card.save(self._pending(serial))

    def commit(self, serial: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(self._pending(serial), self.dir / f"{serial}.json")

    def spoil(self, serial: str, card: VirtualCard | None = None) -> None:
        target = self.spoiled_dir / f"{serial}.json"
        if self._pending(serial).exists():
            os.replace(self._pending(serial), target)
        elif card is not None:
            card.options = dataclasses.replace(card.options, apdu_latency_s=0.0)
            card.save(target)

    def reconcile(self, ledger: Ledger) -> int:
        """Finish renames a crash cut short: pending images of verified cards are committed, others spoiled."""
        n = 0
        for path in sorted(self.dir.glob(".pending-*.json")):
            serial = path.name[len(".pending-"):-len(".json")]
            try:
                verified = ledger.manifest(bytes.fromhex(serial)) is not None
            except (ValueError, LedgerError):
                continue
            self.commit(serial) if verified else self.spoil(serial)
            n += 1
        return n


# ------------------------------------------------------------------------------------------- readers
class TraceSink:
    """A redacted APDU trace file shared by the readers of a station: one whole line per write, under a lock."""

    def __init__(self, fh: IO[str]) -> None:
        self._fh = fh
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return self._fh.write(text)

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()


def _sink(trace: TraceSink | None) -> IO[str] | None:
    return cast(IO[str], trace)


class CardSlot(Protocol):
    """One reader of a station. ``next_card`` returns a session on a card to write (None: stop asked);
    ``release`` is called when the worker is done with that card (``used``: something was written)."""

    name: str
    kind: str

    def next_card(self, stop: threading.Event) -> CardSession | None: ...

    def release(self, session: CardSession, stop: threading.Event, *, used: bool) -> None: ...


class VirtualSlot:
    """An in-process virtual reader fed with fresh blank cards. ``on_card`` sees every new card (tests arm
    faults with :mod:`cardkit.virtual.faults`)."""

    kind = "virtual"

    def __init__(self, name: str, feeder: CardFeeder, *, on_card: Callable[[VirtualCard], None] | None = None,
                 trace: TraceSink | None = None) -> None:
        self.name = name
        self.feeder = feeder
        self.on_card = on_card
        self.trace = trace
        self.card: VirtualCard | None = None

    def next_card(self, stop: threading.Event) -> CardSession | None:
        from cardkit.transport.virtual import VirtualTransport
        from cardkit.virtual.isoauth import mutual_auth_handler

        if stop.is_set():
            return None
        card = self.feeder.next_card()
        card.mutual_auth_handler = mutual_auth_handler
        if self.on_card is not None:
            self.on_card(card)
        self.card = card
        return CardSession(VirtualTransport(card, name=self.name), trace=_sink(self.trace))

    def release(self, session: CardSession, stop: threading.Event, *, used: bool) -> None:
        session.close()
        self.card = None


class PcscSlot:
    """A PC/SC reader: waits for a card to be inserted, and after each card for its removal."""

    kind = "pcsc"

    def __init__(self, reader: str, *, poll_s: float = 0.25, notify: Callable[[str, str], None] | None = None,
                 trace: TraceSink | None = None) -> None:
        self.name = reader
        self.poll_s = poll_s
        self.trace = trace
        self.notify = notify or (lambda reader, text: None)
        self.card = None

    def next_card(self, stop: threading.Event) -> CardSession | None:
        from cardkit.transport.pcsc import CardWaitTimeout, PcscTransport, wait_for_card

        self.notify(self.name, "waiting for a blank card")
        while not stop.is_set():
            try:
                wait_for_card(self.name, self.poll_s)
            except CardWaitTimeout:
                continue
            try:
                return CardSession(PcscTransport(self.name, exclusive=True), trace=_sink(self.trace))
            except TransportError as exc:  # removed again at once, or another application holds it
                log.warning("%s: cannot connect to the card (%s); retrying", self.name, exc)
                stop.wait(self.poll_s)
        return None

    def release(self, session: CardSession, stop: threading.Event, *, used: bool) -> None:
        from cardkit.transport.pcsc import RemovalWaitTimeout, wait_for_removal

        with contextlib.suppress(TransportError):
            session.close()
        self.notify(self.name, "remove the card")
        while not stop.is_set():
            try:
                wait_for_removal(self.name, self.poll_s)
                return
            except RemovalWaitTimeout:
                continue


def make_feeder(profile: Profile, keystore: Keystore, directory: Path, *, latency_s: float = 0.0) -> CardFeeder:
    """A feeder of blank virtual cards holding the profile's transport key (from the keystore)."""
    from cardkit.virtual.card import CardOptions
    from cardkit.virtual.image import CardFeeder

    alg = alg_of(profile.algorithm)
    options = CardOptions(apdu_latency_s=latency_s)
    if profile.channel in ("scp03", "scp02"):
        # GlobalPlatform profiles: blank cards arrive with an issuer security domain holding the transport key
        # set; the ISO MF key 00 (unused by these profiles) gets the set's ENC key.
        from cardkit.issuance.gp import GpOptions, gp_keyset

        version = GpOptions.of(profile).transport_key_version or 1
        keys = gp_keyset(keystore, profile.transport_key, alg, version)
        return CardFeeder(directory, keys.enc, alg, options=options, gp_keys=keys,
                          scp=3 if profile.channel == "scp03" else 2)
    transport = keystore.key(profile.transport_key, alg).value
    return CardFeeder(directory, transport, alg, options=options)
