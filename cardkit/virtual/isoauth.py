"""The virtual card's MUTUAL AUTHENTICATE handler: cardkit's symmetric mutual authentication (the BAC
message layout, :mod:`cardkit.sm.auth`) with keys of usage "SM", opening ISO 7816-4 secure messaging."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.sm.auth import MutualAuthResponder
from cardkit.sm.seed import static_sm_keys
from cardkit.virtual.security import AuthResult, KeyObject

if TYPE_CHECKING:
    from cardkit.virtual.card import VirtualCard

__all__ = ["mutual_auth_handler"]


def mutual_auth_handler(card: VirtualCard, key: KeyObject, challenge: bytes | None,
                        command: CommandApdu) -> AuthResult:
    """Check the terminal's cryptogram against the card's pending challenge; answer and open SM."""
    if challenge is None or len(challenge) != 8:
        return AuthResult(ResponseApdu.of(0x6985), False)  # ISO 7816-4: GET CHALLENGE must come first
    suite, k_enc, k_mac = static_sm_keys(key.alg, key.value)
    pending = [challenge]

    def rng(n: int) -> bytes:
        return pending.pop() if pending and n == len(challenge) else card.random_bytes(n)

    responder = MutualAuthResponder(suite, k_enc, k_mac, rng, key_ref=command.p2)
    responder.get_challenge()
    response, state = responder.respond(command)
    return AuthResult(response, state is not None, state)
