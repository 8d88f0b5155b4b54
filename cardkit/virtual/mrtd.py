"""The eMRTD (ICAO Doc 9303 LDS1 with Basic Access Control) on the virtual card.

The files are ordinary ISO 7816-4 objects written by the issuance engine from the ``mrtd`` profile: a DF named
with the LDS1 AID ``A0000002471001`` holding the transparent EFs 011E (EF.COM), 0101 (DG1), 0102 (DG2) and
011D (EF.SOD) whose read rule is ``key:01 and sm``, and, in that DF, key 01: the BAC key seed as a 3DES key
of usage SM (:func:`cardkit.sm.seed.static_sm_keys` of it gives exactly the BAC K_Enc/K_MAC).

BAC addresses its key with P2 = 00 (ICAO 9303-11 §4.3), which the ISO OS resolves to the MF's key 00 — the
issuer key. :class:`MrtdApplication`, registered for the LDS1 AID by :func:`enable_mrtd`, therefore answers
GET CHALLENGE and EXTERNAL AUTHENTICATE itself while the application is selected: it checks the terminal with
the DF's BAC key (:class:`~cardkit.sm.bac.BacResponder`), marks that key authenticated in the DF and opens
the card-side secure-messaging session after its (plain) answer. Everything else it leaves to the ISO OS,
which serves SELECT and READ BINARY under the access rules.

ICAO rules it adds (9303-11 §9.8): while a BAC session is open, a plain command is refused with 6987 and ends
the session; leaving the application (selecting another one or the MF) ends the session after the SELECT's
protected answer. BAC failures do not count down the key: a document must not be blocked by anyone who holds
it with a wrong MRZ (the key is loaded with the profile's max_tries, which this application ignores).

Images do not store code: apply :func:`enable_mrtd` after :meth:`VirtualCard.load` as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from cardkit.apdu import CommandApdu, ResponseApdu
from cardkit.apps.lds import AID
from cardkit.crypto import Alg
from cardkit.sm.bac import BacResponder
from cardkit.sm.iso import SmError, SmState
from cardkit.sm.seed import static_sm_keys
from cardkit.virtual.fs import DF, TAG_FCI, build_fcp
from cardkit.virtual.security import KeyUsage

if TYPE_CHECKING:
    from cardkit.virtual.card import VirtualCard

__all__ = ["BAC_KEY_REF", "MrtdApplication", "enable_mrtd"]

log = logging.getLogger(__name__)

#: Key reference of the BAC key seed in the eMRTD DF (cardkit's choice; ICAO does not address it).
BAC_KEY_REF = 0x01
# ISO 7816-4:2020 §11.5.5 GET CHALLENGE / §11.5.4 EXTERNAL AUTHENTICATE; ICAO 9303-11 §4.3 (BAC, P2 = 00).
_INS_GET_CHALLENGE = 0x84
_INS_EXTERNAL_AUTHENTICATE = 0x82
_CHALLENGE = 8
# ISO 7816-4:2020 §5.6 Table 6.
_SW_SM_MISSING = 0x6987
_SW_SM_INCORRECT = 0x6988
_SW_NO_CHALLENGE = 0x6985
_SW_NOT_FOUND = 0x6A88


class _BacSession:
    """The card side of a BAC session: an :class:`SmState` that can be retired after one more response."""

    def __init__(self, state: SmState) -> None:
        self.state = state
        self.retiring = False

    def unwrap_command(self, command: CommandApdu) -> CommandApdu:
        if self.retiring:
            self.state.close()
            raise SmError("the BAC session ended when the eMRTD application was left", sw=_SW_SM_INCORRECT)
        return self.state.unwrap_command(command)

    def wrap_response(self, response: ResponseApdu) -> ResponseApdu:
        return self.state.wrap_response(response)


class MrtdApplication:
    """The LDS1 eMRTD application handler (see the module docstring).

    ``rng`` gives RND.ICC and K.ICC (default: the card's random generator; tests pass a fixed one to replay
    ICAO 9303-11 Appendix D). ``key_ref`` is the BAC key's reference in the eMRTD DF.
    """

    def __init__(self, *, key_ref: int = BAC_KEY_REF, rng: Callable[[int], bytes] | None = None) -> None:
        if not 0 <= key_ref <= 0x1F:
            raise ValueError(f"key reference {key_ref} outside 0..31")
        self.key_ref = key_ref
        self._rng = rng

    def __repr__(self) -> str:
        return f"MrtdApplication(key_ref={self.key_ref:02X})"

    # ------------------------------------------------------------------ Application protocol
    def present(self, card: VirtualCard) -> bool:
        """Whether the card holds the eMRTD DF (the application exists only once it is personalized)."""
        return any(isinstance(n, DF) and n.name == AID for n in card.mf.walk())

    def select(self, card: VirtualCard) -> bytes:
        """The FCI of the eMRTD DF (``6F`` with the DF's FCP objects), or nothing when there is no DF."""
        from cardkit.tlv import ber_decode_one, ber_encode

        df = card.channel.current_df
        if df.name != AID:
            return b""
        return ber_encode(TAG_FCI, ber_decode_one(build_fcp(df))[0].value)

    def deselect(self, card: VirtualCard) -> None:
        session = card.security.session
        if isinstance(session, _BacSession):
            session.retiring = True  # the SELECT's answer is still protected; the next command fails

    def process(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu | None:
        st = card.security
        if isinstance(st.session, _BacSession) and not st.sm:
            st.close_sm()
            log.info("plain command during a BAC session: session ended (ICAO 9303-11 §9.8)")
            return ResponseApdu.of(_SW_SM_MISSING)
        if apdu.cla & 0x80:
            return None
        if apdu.ins == _INS_GET_CHALLENGE and apdu.le == _CHALLENGE and not (apdu.p1 or apdu.p2 or apdu.data):
            challenge = self._random(card, _CHALLENGE)
            st.challenge = challenge
            return ResponseApdu.of(0x9000, challenge)
        if apdu.ins == _INS_EXTERNAL_AUTHENTICATE and apdu.p1 == 0x00 and apdu.p2 == 0x00:
            return self._authenticate(card, apdu)
        return None

    # ------------------------------------------------------------------ BAC
    def _random(self, card: VirtualCard, n: int) -> bytes:
        return self._rng(n) if self._rng is not None else card.random_bytes(n)

    def _mrtd_df(self, card: VirtualCard) -> DF | None:
        df: DF | None = card.channel.current_df
        while df is not None and df.name != AID:
            df = df.parent
        return df

    def _authenticate(self, card: VirtualCard, apdu: CommandApdu) -> ResponseApdu:
        st = card.security
        challenge, st.challenge = st.challenge, None
        df = self._mrtd_df(card)
        key = df.keys.get(self.key_ref) if df is not None else None
        if df is None or key is None or key.alg is not Alg.DES3 or key.usage is not KeyUsage.SM:
            # Never fall back to the ISO OS here: P2 = 00 would address the MF's issuer key.
            return ResponseApdu.of(_SW_NOT_FOUND)
        if challenge is None or len(challenge) != _CHALLENGE:
            return ResponseApdu.of(_SW_NO_CHALLENGE)
        _, k_enc, k_mac = static_sm_keys(Alg.DES3, key.value)
        pending = [challenge]

        def rng(n: int) -> bytes:
            return pending.pop() if pending and n == _CHALLENGE else self._random(card, n)

        responder = BacResponder(k_enc, k_mac, rng)
        responder.get_challenge()
        response, state = responder.respond(apdu)
        if state is None:
            log.info("BAC refused (%04X)", response.sw)
            return response
        st.authenticated.add((df, key.ref))
        card.channel.pending_session = (_BacSession(state), False)
        log.debug("BAC established on channel %d", card.channel.number)
        return response


def enable_mrtd(card: VirtualCard, *, key_ref: int = BAC_KEY_REF,
                rng: Callable[[int], bytes] | None = None) -> MrtdApplication:
    """Register the eMRTD application for the LDS1 AID on ``card`` (again after every image load)."""
    app = MrtdApplication(key_ref=key_ref, rng=rng)
    card.register_application(AID, app)
    return app
