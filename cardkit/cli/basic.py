"""Foundation commands: readers, atr, apdu, tlv."""

from __future__ import annotations

import json
import re

import click

from cardkit.cli.main import Options


def _hex_arg(text: str, what: str) -> bytes:
    cleaned = re.sub(r"[\s:]", "", text)
    if len(cleaned) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", cleaned):
        raise click.BadParameter(f"{what} must be hexadecimal bytes, got {text!r}")
    return bytes.fromhex(cleaned)


@click.command()
@click.pass_obj
def readers(opts: Options) -> None:
    """List PC/SC readers, whether a card is present, and the virtual readers.

    \b
    Example:
      cardkit readers
    """
    from cardkit.readers import describe_readers

    rows = describe_readers()
    if opts.json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        card = f"card ATR {row['atr']}" if row.get("atr") else "no card"
        click.echo(f"{row['name']}  [{row['kind']}]  {card}")


@click.command()
@click.argument("hexatr", required=False)
@click.pass_obj
def atr(opts: Options, hexatr: str | None) -> None:
    """Decode an ATR (ISO 7816-3) and match it against the ATR list.

    Without HEXATR, reads the ATR of the card in the reader.

    \b
    Examples:
      cardkit atr 3B8D800180540102030473F621C0829000AA
      cardkit --reader virtual atr
    """
    from cardkit.atr import Atr, AtrList

    if hexatr is None:
        from cardkit.readers import open_session

        with open_session(opts.reader, trace=opts.trace) as session:
            raw = session.atr
    else:
        raw = _hex_arg(hexatr, "ATR")
    parsed = Atr.parse(raw)
    names = AtrList.default().match(raw)
    if opts.json:
        out = parsed.to_dict()
        out["names"] = names
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"ATR: {raw.hex(' ').upper()}")
    for line in parsed.describe():
        click.echo(f"  {line}")
    for name in names:
        click.echo(f"  matches: {name}")
    if not names:
        click.echo("  matches: (no entry in the ATR list)")


@click.command()
@click.argument("apdus", nargs=-1, required=True)
@click.option("--expect-sw", metavar="SW", help="Fail (exit 3) unless the last response has this status word "
              "(hex, '?' wildcards allowed, e.g. 9000 or 61??).")
@click.option("--extended/--no-extended", default=False, help="Send long data as extended APDUs (else chaining).")
@click.pass_obj
def apdu(opts: Options, apdus: tuple[str, ...], expect_sw: str | None, extended: bool) -> None:
    """Send raw APDUs (hex) to the card and show each response with the status word's meaning.

    \b
    Examples:
      cardkit --reader virtual apdu 00A4040008A000000151000000 80CA9F7F00
      cardkit apdu 00A40000023F00 --expect-sw 9000
    """
    from cardkit.apdu import CommandApdu
    from cardkit.readers import open_session
    from cardkit.sw import describe

    commands = [CommandApdu.from_bytes(_hex_arg(a, "APDU")) for a in apdus]
    results = []
    with open_session(opts.reader, trace=opts.trace, extended=extended) as session:
        for cmd in commands:
            resp = session.transmit(cmd)
            results.append({"command": cmd.hex(), "data": resp.data.hex().upper(), "sw": f"{resp.sw:04X}",
                            "meaning": describe(resp.sw)})
            if not opts.json:
                click.echo(f">> {cmd.hex()}")
                data = resp.data.hex(" ").upper()
                click.echo(f"<< {data + ' ' if data else ''}{resp.sw:04X}  ({describe(resp.sw)})")
    if opts.json:
        click.echo(json.dumps(results, indent=2))
    if expect_sw is not None:
        pattern = expect_sw.strip().upper()
        if not re.fullmatch(r"[0-9A-F?]{4}", pattern):
            raise click.BadParameter("--expect-sw takes 4 hex digits, '?' as wildcard", param_hint="--expect-sw")
        got = results[-1]["sw"]
        if not all(p in ("?", g) for p, g in zip(pattern, got, strict=True)):
            from cardkit.sw import error_for

            raise error_for(int(got, 16), f"APDU {results[-1]['command'][:8]}",
                            context={"expected": pattern})


@click.command()
@click.argument("data")
@click.option("--simple", is_flag=True, help="Decode SIMPLE-TLV instead of BER-TLV.")
@click.option("--compact", is_flag=True, help="Decode COMPACT-TLV (historical bytes).")
@click.pass_obj
def tlv(opts: Options, data: str, simple: bool, compact: bool) -> None:
    """Decode TLV data and print it as a tree with tag names.

    \b
    Examples:
      cardkit tlv 6F108408A000000151000000A5049F6501FF
      cardkit tlv --simple 0709583030303030303139
    """
    from cardkit import tlv as t

    raw = _hex_arg(data, "TLV data")
    if simple or compact:
        items = t.simple_decode(raw) if simple else t.compact_decode(raw)
        if opts.json:
            click.echo(json.dumps([{"tag": f"{k:02X}", "value": v.hex().upper()} for k, v in items], indent=2))
        else:
            for k, v in items:
                click.echo(f"{k:02X} [{len(v)}] {v.hex(' ').upper()}")
        return
    objs = t.ber_decode(raw)
    if opts.json:
        def conv(o: t.Tlv) -> dict[str, object]:
            d: dict[str, object] = {"tag": f"{o.tag:X}"}
            if o.constructed:
                d["children"] = [conv(c) for c in o.children]
            else:
                d["value"] = o.value.hex().upper()
            return d

        click.echo(json.dumps([conv(o) for o in objs], indent=2))
    else:
        click.echo(t.pretty(objs))


@click.command()
@click.option("--profile", "profile_name", default="ssc", show_default=True, help="Profile to personalize.")
@click.option("--algorithm", type=click.Choice(["sm4", "3des"]), default="sm4", show_default=True)
@click.option("--count", default=3, show_default=True, help="How many sample records to issue.")
@click.pass_obj
def demo(opts: Options, profile_name: str, algorithm: str, count: int) -> None:
    """Issue a few cards from the profile's sample batch onto fresh virtual cards and verify them.

    Uses the TEST keys in keys/test/ (never for real cards). Each card image is saved under
    $CARDKIT_HOME/demo/ so `cardkit --reader virtual:IMAGE apdu ...` can inspect it afterwards.

    \b
    Example:
      cardkit demo --count 3
    """
    import csv

    from cardkit.issuance.engine import personalize, verify
    from cardkit.issuance.prepare import prepare
    from cardkit.keys.store import TestKeyFile, alg_of
    from cardkit.profiles.model import find_profile, load_profile
    from cardkit.profiles.validators import mask_identifier
    from cardkit.readers import TEST_KEYS, cardkit_home, new_virtual_card
    from cardkit.session import CardSession
    from cardkit.transport.virtual import VirtualTransport

    path = find_profile(profile_name)
    profile = load_profile(path, algorithm=algorithm)
    keystore = TestKeyFile(TEST_KEYS, allow_test_keys=True)
    transport_key = keystore.key(profile.transport_key, alg_of(algorithm)).value
    out = cardkit_home() / "demo"
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    click.echo(f"cardkit demo: profile {profile.name} ({profile.algorithm}), virtual cards, TEST keys — "
               "no physical card is written")
    with open(path.parent / "sample-batch.csv", encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i >= count:
                break
            prepared = prepare(profile, row, line=i + 2)
            card = new_virtual_card(alg=alg_of(algorithm), transport_key=transport_key)
            session = CardSession(VirtualTransport(card))
            result = personalize(session, profile, prepared, keystore)
            written = session.apdu_count
            manifest = verify(session, profile, prepared, keystore, result)
            image = out / f"card-{result.serial}.json"
            card.save(image)
            click.echo(f"  record {i + 1} ({mask_identifier(prepared.identity)}): chip {result.serial} personalized in "
                       f"{written} APDUs, verified {len(manifest['files'])} files in {session.apdu_count - written} "
                       f"APDUs -> {image}")
    click.echo("done: every card verified")
