"""Secure-channel cost per APDU: cardkit SCP03 (level 33) and SCP02 (C-MAC + C-DECRYPTION + R-MAC) against
Yubico's yubikit SCP03 processor, with the same keys and APDUs in the same run.

yubikit (``pip install yubikey-manager``; benchmark-only, not a cardkit dependency) drives SCP03 only through a
``SmartCardConnection``. There is no YubiKey here, so both hosts talk to the *same* card side — cardkit's
:class:`~cardkit.sm.scp03.Scp03Card` with an echo application — through an in-memory connection: yubikit gets a
fake ``SmartCardConnection`` (a benchmark harness, not a test double of anything cardkit tests), cardkit a
loop-back transport under a :class:`~cardkit.session.CardSession`. yubikit opens its channel with its own
INITIALIZE UPDATE / EXTERNAL AUTHENTICATE (level 33, S8, AES-128) against that card, which also shows the two
implementations interoperate.

Per APDU we time the whole host path (build, protect, format, parse, unprotect) and subtract the time spent
inside the card side (parse, unwrap, echo, wrap, format), measured around the card call. The same is done with
no secure channel, so "SCP only" = host time with the channel − host time without it. Ratios are cardkit /
yubikit (below 1: cardkit is cheaper).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.crypto import Alg
from cardkit.session import CardSession
from cardkit.sm.gp import GpKeySet
from cardkit.sm.scp02 import Scp02Card, Scp02Host
from cardkit.sm.scp03 import Scp03Card, Scp03Host

# Benchmark-only random keys (fresh per run).
AES_KEYS = (os.urandom(16), os.urandom(16), os.urandom(16))
DES3_KEY = os.urandom(16)
ECHO_INS = 0x10
SCP03_LEVEL = 0x33  # C-MAC, C-DECRYPTION, R-MAC, R-ENCRYPTION (GPCS Amendment D §7.1.2.1)
SCP02_LEVEL = 0x13  # C-MAC, C-DECRYPTION, R-MAC (GPCS 2.3.1 §E.5.2.3)
SCP02_I = 0x35      # three keys, explicit initiation, ICV encryption, R-MAC (GPCS 2.3.1 §E.1.1)


def _echo(command: CommandApdu) -> ResponseApdu:
    return ResponseApdu.of(0x9000, command.data)


class CardSide:
    """Bytes in, bytes out: the card's SCP layer over an echo application; time spent here is accumulated."""

    def __init__(self, card: Scp03Card | Scp02Card | None) -> None:
        self.card = card
        self.spent = 0.0

    def __call__(self, apdu: bytes) -> bytes:
        t0 = time.perf_counter()
        command = CommandApdu.from_bytes(apdu)
        response = self.card.handle(command, _echo) if self.card is not None else _echo(command)
        out = response.to_bytes()
        self.spent += time.perf_counter() - t0
        return out


class LoopTransport:
    """A cardkit Transport whose card is a :class:`CardSide` in this process."""

    protocol = "T=1"
    name = "loop"
    atr = bytes.fromhex("3B00")

    def __init__(self, side: CardSide) -> None:
        self.side = side

    def transmit(self, apdu: bytes) -> bytes:
        return self.side(apdu)

    def reset(self, cold: bool = False) -> bytes:
        return self.atr

    def close(self) -> None:
        pass


def interleaved(calls: dict[str, tuple[Callable[[], object], CardSide]], n: int, batches: int) -> dict[str, float]:
    """Median over batches of (wall time − card-side time) per APDU, in µs. Batches of the implementations
    alternate, so the noise of this shared machine hits all of them alike."""
    per: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(batches):
        for name, (call, side) in calls.items():
            side.spent = 0.0
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            per[name].append((time.perf_counter() - t0 - side.spent) / n)
    return {name: statistics.median(v) * 1e6 for name, v in per.items()}


def cardkit_session(kind: str) -> tuple[CardSession, CardSide]:
    if kind == "plain":
        side = CardSide(None)
        return CardSession(LoopTransport(side), extended=True), side
    if kind == "scp03":
        keys = GpKeySet(*AES_KEYS, alg=Alg.AES)
        side = CardSide(Scp03Card(keys, i=0x60))  # R-MAC + R-ENC, random card challenge
        session = CardSession(LoopTransport(side), extended=True)
        session.push(Scp03Host.open(session.transmit, keys, level=SCP03_LEVEL))
        return session, side
    keys = GpKeySet.single(DES3_KEY, alg=Alg.DES3)
    side = CardSide(Scp02Card(keys, i=SCP02_I))
    session = CardSession(LoopTransport(side), extended=True)
    session.push(Scp02Host.open(session.transmit, keys, level=SCP02_LEVEL, i=SCP02_I))
    return session, side


def yubikit_protocol(scp: bool, extended: bool) -> tuple[object, CardSide]:
    from yubikit.core import TRANSPORT, Version
    from yubikit.core.smartcard import SmartCardConnection, SmartCardProtocol
    from yubikit.core.smartcard.scp import Scp03KeyParams, StaticKeys

    keys = GpKeySet(*AES_KEYS, alg=Alg.AES)
    side = CardSide(Scp03Card(keys, i=0x60) if scp else None)

    class FakeConnection(SmartCardConnection):
        """yubikit's connection interface, answered by the in-memory card side (benchmark harness)."""

        @property
        def transport(self) -> TRANSPORT:
            return TRANSPORT.USB

        def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
            out = side(apdu)
            return out[:-2], int.from_bytes(out[-2:], "big")

        def close(self) -> None:
            pass

    protocol = SmartCardProtocol(FakeConnection())
    if scp:
        protocol.init_scp(Scp03KeyParams(keys=StaticKeys(*AES_KEYS)))
    if extended:
        # A current YubiKey over USB: every APDU in extended form (needed for 255-byte payloads, 264 bytes once
        # wrapped). Switched on *after* the handshake: yubikit then sends EXTERNAL AUTHENTICATE extended with a
        # 2-byte Lc of 16 and MACs that encoding, which cardkit's card side (1-byte Lc in the MAC input for
        # Lc <= 255) rejects with 6982 — and yubikit does not check that status word. The channel state is kept.
        protocol.configure(Version(5, 7, 2))
    return protocol, side


def main(n: int = 200, batches: int = 25) -> dict[str, float]:
    try:
        import yubikit  # noqa: F401
    except ImportError:
        print("  yubikit is not installed (pip install yubikey-manager): only cardkit's figures")
        yubikit_ok = False
    else:
        yubikit_ok = True
    results: dict[str, float] = {}
    sessions = {k: cardkit_session(k) for k in ("plain", "scp03", "scp02")}
    for size in (16, 255):
        # yubikit formats short APDUs by default and extended ones once configured for a USB YubiKey; it then
        # sends every APDU extended. cardkit sends a 40-byte wrapped command short and a 264-byte one extended.
        yk = {k: yubikit_protocol(k == "scp03", size > 200) for k in ("plain", "scp03")} if yubikit_ok else {}
        payload = os.urandom(size)
        cmd = CommandApdu(0x80, ECHO_INS, 0, 0, payload)
        calls: dict[str, tuple[Callable[[], object], CardSide]] = {}
        for kind, (session, side) in sessions.items():
            def call(session: CardSession = session, cmd: CommandApdu = cmd, payload: bytes = payload) -> None:
                if session.transmit(cmd).data != payload:
                    raise RuntimeError("echo mismatch")
            calls[f"cardkit_{kind}"] = (call, side)
        for kind, (protocol, side) in yk.items():
            def ycall(protocol: object = protocol, payload: bytes = payload) -> None:
                if protocol.send_apdu(0x80, ECHO_INS, 0, 0, payload) != payload:  # type: ignore[attr-defined]
                    raise RuntimeError("echo mismatch")
            calls[f"yubikit_{kind}"] = (ycall, side)
        row = interleaved(calls, n, batches)
        ck03 = row["cardkit_scp03"] - row["cardkit_plain"]
        ck02 = row["cardkit_scp02"] - row["cardkit_plain"]
        print(f"  {size:3d}-byte payload, host µs per APDU (wrap + unwrap + stack; card side excluded):")
        print(f"      cardkit  plain {row['cardkit_plain']:6.1f}   SCP03/33 {row['cardkit_scp03']:6.1f} "
              f"(SCP only {ck03:6.1f})   SCP02/13 i=35 {row['cardkit_scp02']:6.1f} (SCP only {ck02:6.1f})")
        if yk:
            y03 = row["yubikit_scp03"] - row["yubikit_plain"]
            print(f"      yubikit  plain {row['yubikit_plain']:6.1f}   SCP03/33 {row['yubikit_scp03']:6.1f} "
                  f"(SCP only {y03:6.1f})")
            whole = row["cardkit_scp03"] / row["yubikit_scp03"]
            print(f"      ratio cardkit/yubikit, SCP03: whole host path {whole:.2f}, SCP only {ck03 / y03:.2f}")
            results[f"ratio_scp03_{size}"] = row["cardkit_scp03"] / row["yubikit_scp03"]
            results[f"ratio_scp03_only_{size}"] = ck03 / y03
        results.update({f"{k}_{size}_us": v for k, v in row.items()})
    return results


if __name__ == "__main__":
    main()
