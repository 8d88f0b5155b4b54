"""List the GlobalPlatform registry of a card (security domain, applications, load files) over SCP03.

    python examples/gp_list_apps.py                        # a virtual card with an ISD and the GP test key
    python examples/gp_list_apps.py "READER" KEYHEX [KVN]  # a card in a PC/SC reader (one key for ENC/MAC/DEK)

The GlobalPlatform test key 404142…4F is public: it is used here only for the virtual card, named explicitly,
with a warning. Never put real keys on a command line; use a keystore (``cardkit.keys``).
"""

from __future__ import annotations

import sys

from cardkit.commands import gp
from cardkit.commands.gpdata import parse_get_status
from cardkit.crypto import Alg
from cardkit.session import CardSession
from cardkit.sm.gp import GpKeySet
from cardkit.sm.scp03 import Scp03Host

GP_TEST_KEY = bytes.fromhex("404142434445464748494A4B4C4D4E4F")  # well-known GlobalPlatform TEST key
SUBSETS = (("isd", "issuer security domain"), ("apps", "applications and security domains"),
           ("load-files", "executable load files"))


def virtual_card_session(keys: GpKeySet) -> CardSession:
    from cardkit.readers import new_virtual_card
    from cardkit.transport.virtual import VirtualTransport
    from cardkit.virtual.gp import install_isd

    card = new_virtual_card()
    install_isd(card, keys, scp=3)
    return CardSession(VirtualTransport(card))


def main(argv: list[str]) -> int:
    if len(argv) >= 3:
        from cardkit.readers import open_transport

        keys = GpKeySet.single(bytes.fromhex(argv[2]), alg=Alg.AES, version=int(argv[3], 16) if len(argv) > 3 else 0)
        session = CardSession(open_transport(argv[1]))
    else:
        print("warning: virtual card with the well-known GlobalPlatform TEST key 404142…4F", file=sys.stderr)
        keys = GpKeySet.single(GP_TEST_KEY, alg=Alg.AES, version=0x30)
        session = virtual_card_session(keys)
    with session:
        session.send(gp.select_isd(gp.DEFAULT_ISD_AID))
        channel = Scp03Host.open(session.transmit, keys, level=0x33)  # C-MAC, C-DEC, R-MAC, R-ENC
        session.push(channel)
        print(f"SCP03 open: key version {channel.key_version:02X}, level {int(channel.level):02X}")
        for subset, title in SUBSETS:
            entries = []
            command = gp.get_status(subset)  # type: ignore[arg-type]
            while True:
                response = session.transmit(command)
                if response.sw == 0x6A88:  # GPCS 2.3.1 §11.4.3: no entry
                    break
                if response.sw not in (0x9000, 0x6310):
                    session.send(command)  # raises the typed error with the status word's meaning
                entries += parse_get_status(response.data, subset)  # type: ignore[arg-type]
                if response.sw != 0x6310:  # 6310: more entries, ask for the next ones
                    break
                command = gp.get_status(subset, next=True)  # type: ignore[arg-type]
            print(f"{title}: {len(entries) or 'none'}")
            for e in entries:
                print(f"  {e.aid.hex().upper():32} {e.life_cycle_name:12} {', '.join(e.privilege_names[:4])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
