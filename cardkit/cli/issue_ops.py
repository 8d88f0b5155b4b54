"""Commands on an issued card: ``pin`` (status, change, unblock), ``card`` (block, unblock, terminate), ``ssc``.

Secrets never come from argv: PINs and PUKs from the environment (``CARDKIT_PIN``, ``CARDKIT_NEW_PIN``,
``CARDKIT_PUK``) or a hidden prompt; keys from ``--keys FILE`` (TEST key files only with ``--allow-test-keys``).
Personal data given as options (``ssc bind-family --member-ssn``) is not secret but is never echoed in full.
The commands follow the global ``--reader`` default. Option decorators and helpers come from
:mod:`cardkit.cli.issue`.
"""

from __future__ import annotations

import click

from cardkit.cli.issue import _keys_options, _out, _profile, _profile_option, _secret, _session, open_keystore
from cardkit.cli.main import Options

__all__ = ["card", "pin", "ssc"]


# ------------------------------------------------------------------------------------------ pin


@click.group()
def pin() -> None:
    """PIN operations: status (no keys, no try spent), change, unblock (cardholder secure channel).

    \b
    Examples:
      cardkit pin status
      CARDKIT_PIN=... CARDKIT_NEW_PIN=... cardkit pin change --keys keys.toml
      CARDKIT_PUK=... CARDKIT_NEW_PIN=... cardkit pin unblock --keys keys.toml
    """


@pin.command("status")
@_profile_option
@click.option("--name", default="pin", show_default=True, help="PIN name in the profile.")
@click.pass_obj
def pin_status_cmd(opts: Options, profile_name: str, name: str) -> None:
    """Tries left of the PIN (VERIFY without data: 63Cx — no try is spent).

    \b
    Example:
      cardkit --reader virtual:card.json pin status
    """
    from cardkit.issuance.operations import pin_status

    profile = _profile(profile_name)
    with _session(opts) as session:
        st = pin_status(session, profile, name)
    state = ("blocked" if st.blocked else "verified in this session" if st.tries_left is None
             else f"{st.tries_left} of {st.max_tries} tries left")
    lines = [f"{st.name} ({st.df}): {state}" + (f" — {st.df} is deactivated (card blocked)" if st.df_deactivated
                                                 else "")]
    puk = profile.puk_for(name)
    if puk:
        lines.append(f"{puk.name}: {puk.max_tries} tries at issuance; the card reports no PUK counter without "
                     "spending a try")
    _out(opts, {"pin": st.name, "df": st.df, "tries_left": st.tries_left, "max_tries": st.max_tries,
                "blocked": st.blocked, "df_deactivated": st.df_deactivated}, lines)


@pin.command("change")
@_profile_option
@_keys_options
@click.option("--name", default="pin", show_default=True)
@click.pass_obj
def pin_change(opts: Options, profile_name: str, keys: str | None, allow_test_keys: bool, name: str) -> None:
    """Change the PIN (CHANGE REFERENCE DATA under secure messaging). Current PIN from $CARDKIT_PIN, new one
    from $CARDKIT_NEW_PIN, else hidden prompts.

    \b
    Example:
      cardkit --reader virtual:card.json pin change --allow-test-keys
    """
    from cardkit.issuance.operations import change_pin

    profile = _profile(profile_name)
    keystore = open_keystore(keys, allow_test_keys)
    old = _secret("CARDKIT_PIN", "Current PIN")
    new = _secret("CARDKIT_NEW_PIN", "New PIN", confirm=True)
    with _session(opts) as session:
        change_pin(session, profile, keystore, old, new, name=name)
    _out(opts, {"pin": name, "changed": True}, [f"{name} changed"])


@pin.command("unblock")
@_profile_option
@_keys_options
@click.option("--name", default="pin", show_default=True)
@click.pass_obj
def pin_unblock(opts: Options, profile_name: str, keys: str | None, allow_test_keys: bool, name: str) -> None:
    """Unblock the PIN with the PUK and set a new PIN (RESET RETRY COUNTER under secure messaging). PUK from
    $CARDKIT_PUK, new PIN from $CARDKIT_NEW_PIN, else hidden prompts.

    \b
    Example:
      cardkit --reader virtual:card.json pin unblock --allow-test-keys
    """
    from cardkit.issuance.operations import unblock_pin

    profile = _profile(profile_name)
    keystore = open_keystore(keys, allow_test_keys)
    puk = _secret("CARDKIT_PUK", "PUK")
    new = _secret("CARDKIT_NEW_PIN", "New PIN", confirm=True)
    with _session(opts) as session:
        unblock_pin(session, profile, keystore, puk, new, name=name)
    _out(opts, {"pin": name, "unblocked": True}, [f"{name} unblocked and set"])


# ------------------------------------------------------------------------------------------ card


@click.group()
def card() -> None:
    """Card life cycle under the issuer channel: block / unblock the application DF, terminate the card.

    \b
    Examples:
      cardkit card block --keys keys.toml
      cardkit card terminate --keys keys.toml --yes
    """


def _lifecycle(opts: Options, profile_name: str, keys: str | None, allow_test_keys: bool, what: str) -> None:
    from cardkit.issuance import operations

    profile = _profile(profile_name)
    keystore = open_keystore(keys, allow_test_keys)
    fn = {"block": operations.block_card, "unblock": operations.unblock_card,
          "terminate": operations.terminate_card}[what]
    with _session(opts) as session:
        fn(session, profile, keystore)
        from cardkit.issuance.engine import chip_serial

        serial = chip_serial(session.atr).hex().upper()
    target = profile.post_issuance.block if what != "terminate" else "card"
    _out(opts, {"chip_serial": serial, "action": what, "target": target},
         [f"chip {serial}: {what} {'done' if what != 'terminate' else 'done — the card is unusable'} ({target})"])


@card.command("block")
@_profile_option
@_keys_options
@click.pass_obj
def card_block(opts: Options, profile_name: str, keys: str | None, allow_test_keys: bool) -> None:
    """Block the card: DEACTIVATE FILE on the profile's application DF (reversible with `card unblock`).

    \b
    Example:
      cardkit --reader virtual:card.json card block --allow-test-keys
    """
    _lifecycle(opts, profile_name, keys, allow_test_keys, "block")


@card.command("unblock")
@_profile_option
@_keys_options
@click.pass_obj
def card_unblock(opts: Options, profile_name: str, keys: str | None, allow_test_keys: bool) -> None:
    """Unblock the card: ACTIVATE FILE on the application DF.

    \b
    Example:
      cardkit --reader virtual:card.json card unblock --allow-test-keys
    """
    _lifecycle(opts, profile_name, keys, allow_test_keys, "unblock")


@card.command("terminate")
@_profile_option
@_keys_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def card_terminate(opts: Options, profile_name: str, keys: str | None, allow_test_keys: bool, yes: bool) -> None:
    """Terminate the card (TERMINATE CARD USAGE): irreversible, every command fails afterwards.

    \b
    Example:
      cardkit --reader virtual:card.json card terminate --allow-test-keys --yes
    """
    if not yes:
        click.confirm("Terminate the card for good?", abort=True, err=True)
    _lifecycle(opts, profile_name, keys, allow_test_keys, "terminate")


# ------------------------------------------------------------------------------------------ ssc


@click.group()
def ssc() -> None:
    """Social security card operations declared by the ssc profile.

    \b
    Example:
      CARDKIT_PIN=... cardkit ssc bind-family --member-ssn 120101196310210289 --relationship 10 --keys keys.toml
    """


@ssc.command("bind-family")
@_profile_option
@_keys_options
@click.option("--member-ssn", required=True, help="The family member's social security number (citizen ID).")
@click.option("--relationship", required=True, help="Relationship code, two digits.")
@click.option("--member-name", default="", help="The family member's name (optional).")
@click.pass_obj
def bind_family(opts: Options, profile_name: str, keys: str | None, allow_test_keys: bool, member_ssn: str,
                relationship: str, member_name: str) -> None:
    """Bind a family member: append a record to DF04/EF06 under the cardholder PIN and secure messaging.
    The cardholder PIN comes from $CARDKIT_PIN or a hidden prompt. A member already bound is refused.

    \b
    Example:
      cardkit --reader virtual:card.json ssc bind-family --member-ssn 120101196310210289 \\
          --relationship 10 --allow-test-keys
    """
    from cardkit.issuance.operations import run_operation
    from cardkit.profiles.validators import mask_identifier

    profile = _profile(profile_name)
    op = profile.operation("bind-family")
    values = {"member_ssn": member_ssn.strip(), "relationship": relationship.strip()}
    if member_name:
        values["member_name"] = member_name.strip()
    from cardkit.issuance.operations import encode_operation

    encode_operation(op, values)  # every field checked before the card or a PIN prompt
    keystore = open_keystore(keys, allow_test_keys)
    pins = {n: _secret("CARDKIT_PIN", f"{n.upper()}") for n in op.needs if n in {p.name for p in profile.pins}}
    with _session(opts) as session:
        res = run_operation(session, profile, keystore, "bind-family", values, pins)
    _out(opts, {"operation": res.operation, "file": res.file, "records": list(res.records),
                "member": mask_identifier(values["member_ssn"])},
         [f"bound family member {mask_identifier(values['member_ssn'])} in {res.file} (record "
          f"{', '.join(map(str, res.records))})"])
