"""Opening a card session from a reader specification — the one place that picks PC/SC or the virtual card.

Specifications: a PC/SC reader name (fuzzy), ``pcsc:NAME``, ``replay:FILE``, ``virtual`` (the default
virtual card image, kept between commands) or ``virtual:IMAGE`` (a card image file). With no specification
the first PC/SC reader holding a card is used; when there is none, the virtual card, with a notice that no
physical card is written.

The virtual card is cardkit's embedded default reader. A blank one gets the TEST transport key named
``ssc-transport`` from ``keys/test/ssc.toml`` — a well-known test value, announced with a warning.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cardkit.crypto import Alg
from cardkit.errors import NoReaderError, TransportError
from cardkit.session import CardSession
from cardkit.transport.base import Transport
from cardkit.transport.virtual import VirtualTransport

__all__ = ["TEST_KEYS", "cardkit_home", "describe_readers", "new_virtual_card", "open_session", "open_transport"]

log = logging.getLogger(__name__)

#: The repository's TEST key files (used only for virtual cards, demos and tests).
TEST_KEYS = Path(__file__).resolve().parents[1] / "keys" / "test" / "ssc.toml"
TEST_GP_KEYS = TEST_KEYS.with_name("gp.toml")


def cardkit_home() -> Path:
    home = Path(os.environ.get("CARDKIT_HOME", Path.home() / ".cardkit"))
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def new_virtual_card(serial: bytes | None = None, *, alg: Alg = Alg.SM4, transport_key: bytes | None = None,
                     seed: int | None = None, gp_keys: Any = None, scp: int = 3) -> Any:
    """A blank virtual card: the MF with its transport key 00 (cardkit's ISO issuer channel), the eMRTD
    handler, and a GlobalPlatform issuer security domain.

    ``transport_key`` defaults to the TEST key ``ssc-transport``; ``gp_keys`` is a
    :class:`~cardkit.sm.gp.GpKeySet`, ``None`` for no ISD, or ``"test"`` for the well-known GlobalPlatform
    test key set 404142…4F (key version 01, SCP03 with AES or SCP02 with 3DES by ``scp``) — announced with a
    warning.
    """
    from cardkit.virtual.card import VirtualCard

    if transport_key is None:
        from cardkit.keys.store import TestKeyFile

        log.warning("blank virtual card: transport key = TEST key 'ssc-transport' (%s)", alg.value)
        transport_key = TestKeyFile(TEST_KEYS, allow_test_keys=True).key("ssc-transport", alg).value
    card = VirtualCard.blank(serial or secrets.token_bytes(4), transport_key, alg, seed=seed)
    if isinstance(gp_keys, str) and gp_keys == "test":
        from cardkit.sm.gp import GpKeySet

        log.warning("blank virtual card: GlobalPlatform ISD with the well-known TEST key 404142…4F")
        gp_alg = Alg.AES if scp == 3 else Alg.DES3
        gp_keys = GpKeySet.single(bytes.fromhex("404142434445464748494A4B4C4D4E4F"), alg=gp_alg, version=1)
    if gp_keys is not None:
        from cardkit.virtual.gp import install_isd

        install_isd(card, gp_keys, scp)
    return card


def load_virtual_card(path: Path) -> Any:
    from cardkit.virtual.card import VirtualCard

    return VirtualCard.load(path)


class ImageTransport(VirtualTransport):
    """A virtual card backed by an image file: loaded at open, saved at close (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        card = load_virtual_card(path) if path.exists() else new_virtual_card(gp_keys="test")
        super().__init__(card, name=f"cardkit virtual card ({path.name})")

    def close(self) -> None:
        if self._present:
            self.card.save(self.path)  # type: ignore[attr-defined]
        super().close()


def _pcsc_with_card() -> str | None:
    try:
        from cardkit.transport.pcsc import list_readers, wait_for_card
    except ImportError:  # pragma: no cover - pyscard not installed
        return None
    try:
        names = list_readers()
    except TransportError:
        return None
    for name in names:
        try:
            wait_for_card(name, 0)
            return name
        except TransportError:
            continue
    return None


def open_transport(spec: str | None) -> Transport:
    if spec is None:
        reader = _pcsc_with_card()
        if reader is not None:
            from cardkit.transport.pcsc import PcscTransport

            return PcscTransport(reader)
        log.warning("no PC/SC reader with a card: using the virtual card (no physical card is written)")
        spec = "virtual"
    if spec == "virtual":
        return ImageTransport(cardkit_home() / "virtual-card.json")
    if spec.startswith("virtual:"):
        return ImageTransport(Path(spec[len("virtual:"):]))
    from cardkit.transport import open_transport as _open

    try:
        return _open(spec)
    except NoReaderError:
        raise
    except ImportError as exc:  # pragma: no cover - pyscard missing
        raise NoReaderError(f"PC/SC support is not installed (pip install 'cardkit[pcsc]'): {exc}") from None


@contextmanager
def open_session(spec: str | None, *, trace: str | None = None, extended: bool = False) -> Iterator[CardSession]:
    """A :class:`CardSession` on the reader ``spec``; the trace file (if any) is appended, mode 0600."""
    sink: IO[str] | None = None
    if trace:
        from cardkit.fsutil import open_private_append

        sink = open_private_append(trace)
    transport = open_transport(spec)
    session = CardSession(transport, extended=extended, trace=sink)
    try:
        yield session
    finally:
        session.close()
        if sink is not None:
            sink.close()


def describe_readers() -> list[dict[str, str]]:
    """PC/SC readers with their card state, then the virtual readers."""
    rows: list[dict[str, str]] = []
    try:
        from cardkit.transport.pcsc import list_readers, wait_for_card

        for name in list_readers():
            row = {"name": name, "kind": "pcsc"}
            try:
                row["atr"] = wait_for_card(name, 0).hex().upper()
            except TransportError:
                pass
            rows.append(row)
    except (ImportError, TransportError) as exc:
        log.info("PC/SC not available: %s", exc)
    image = cardkit_home() / "virtual-card.json"
    rows.append({"name": "virtual", "kind": "virtual", "image": str(image)})
    return rows
