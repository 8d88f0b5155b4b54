"""Per-APDU host overhead of CardSession vs raw pyscard SCardTransmit, same card, same run.

The card is served through the real stack: pyscard -> libpcsclite -> pcscd -> vpcd -> TCP -> an echo card
in this process. Rounds alternate between the two paths so machine noise hits both alike.
"""

from __future__ import annotations

import statistics
import time

from cardkit.apdu import CommandApdu
from cardkit.pcscd import PcscDaemon
from cardkit.session import CardSession
from cardkit.transport.pcsc import PcscTransport, wait_for_card
from cardkit.transport.vpcd import VpcdCardServer

ATR = bytes.fromhex("3B8D800180540102030473F621C0829000AA")


class EchoCard:
    @property
    def atr(self) -> bytes:
        return ATR

    def power_on(self) -> bytes:
        return ATR

    def power_off(self) -> None:
        pass

    def transmit(self, apdu: bytes) -> bytes:
        return apdu[5:-1] + b"\x90\x00" if len(apdu) > 5 else b"\x90\x00"


def _per_apdu(fn: object, n: int) -> float:
    call = fn  # type: ignore[assignment]
    t0 = time.perf_counter()
    for _ in range(n):
        call()  # type: ignore[operator]
    return (time.perf_counter() - t0) / n


def main(rounds: int = 15, n: int = 200) -> dict[str, float]:
    from benchmarks.bench_virtual import pcscd_lock

    with pcscd_lock(), PcscDaemon(readers=2, base_port=35963) as daemon:
        reader, port = daemon.slots()[0]
        server = VpcdCardServer(EchoCard(), port=port).start()
        try:
            wait_for_card(reader, 10)
            transport = PcscTransport(reader)
            session = CardSession(transport)
            results: dict[str, dict[str, float]] = {}
            for size in (16, 255):
                raw_bytes = CommandApdu(0x80, 0x10, 0, 0, bytes(size), le=256).to_bytes()
                cmd = CommandApdu(0x80, 0x10, 0, 0, bytes(size), le=256)
                s = transport._scard  # the raw pyscard call, as an application would make it
                card, pci = transport._card, transport._pci

                # The baseline an application writes with pyscard's raw API: APDU bytes in, bytes out.
                def raw(s=s, card=card, pci=pci, raw_bytes=raw_bytes) -> None:  # type: ignore[no-untyped-def]
                    _, resp = s.SCardTransmit(card, pci, list(raw_bytes))
                    bytes(resp)

                def ck(cmd=cmd) -> None:  # type: ignore[no-untyped-def]
                    session.transmit(cmd)

                raw_t, ck_t = [], []
                for _ in range(rounds):
                    raw_t.append(_per_apdu(raw, n))
                    ck_t.append(_per_apdu(ck, n))
                r, c = statistics.median(raw_t), statistics.median(ck_t)
                results[str(size)] = {"raw_us": r * 1e6, "cardkit_us": c * 1e6, "ratio": c / r}
                print(f"  {size:3d}-byte APDU round trip: raw pyscard {r * 1e6:7.1f} µs, "
                      f"CardSession {c * 1e6:7.1f} µs, ratio {c / r:.3f}")
            transport.close()
        finally:
            server.stop()
    return {k: v["ratio"] for k, v in results.items()}


if __name__ == "__main__":
    main()
