"""``cardkit gp``: GlobalPlatform card information and management through the issuer security domain.

Keys come from a keystore (``--keys``: a key URI such as ``store:PATH`` / ``pkcs11:...``, or a TEST key file path
accepted only with ``--allow-test-keys``), never from the command line; ``--keyset`` names the GP key set in it
(``NAME-enc``/``-mac``/``-dek``, or one key ``NAME``; see :func:`cardkit.issuance.gp.gp_keyset`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cardkit.cli.main import Options

if TYPE_CHECKING:
    from cardkit.commands.gpdata import CardData, GetStatusEntry
    from cardkit.issuance.gp import GpChannel
    from cardkit.keys.store import Keystore
    from cardkit.session import CardSession
    from cardkit.sm.gp import GpKeySet

_ISD_DEFAULT = "A000000151000000"
_STATES = {"initialized": 0x07, "secured": 0x0F, "card-locked": 0x7F, "terminated": 0xFF}


def _hex(text: str, what: str, lo: int = 1, hi: int = 255) -> bytes:
    cleaned = re.sub(r"[\s:]", "", text)
    if len(cleaned) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", cleaned):
        raise click.BadParameter(f"{what} must be hexadecimal bytes, got {text!r}")
    raw = bytes.fromhex(cleaned)
    if not lo <= len(raw) <= hi:
        raise click.BadParameter(f"{what} must be {lo}..{hi} bytes, got {len(raw)}")
    return raw


def _byte(text: str, what: str, hi: int = 0xFF) -> int:
    value = int.from_bytes(_hex(text.removeprefix("0x"), what, 1, 1), "big")
    if value > hi:
        raise click.BadParameter(f"{what} must be 00..{hi:02X}, got {value:02X}")
    return value


def open_keys(spec: str, allow_test_keys: bool) -> Keystore:
    """The keystore behind ``--keys``: a key URI (``file:``, ``store:``, ``pkcs11:``) or a TEST key file path."""
    from cardkit.keys.uri import open_keystore

    uri = spec if re.match(r"^(file|store|pkcs11):", spec) else f"file:{spec}"
    return open_keystore(uri, allow_test_keys=allow_test_keys)


def _key_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--keys", "keys_spec", required=True, metavar="URI|FILE",
                     help="Keystore: store:PATH, pkcs11:..., or a TEST key file (needs --allow-test-keys)."),
        click.option("--allow-test-keys", is_flag=True, help="Accept a TEST key file (well-known keys, never for "
                                                            "real cards)."),
        click.option("--keyset", required=True, metavar="NAME", help="GP key set in the keystore (NAME-enc/-mac/"
                                                                     "-dek, or one key NAME)."),
        click.option("--key-version", default="00", show_default=True, metavar="HEX",
                     help="Key version number to authenticate with (00 = the card's default key set)."),
        click.option("--scp", type=click.Choice(["auto", "02", "03"]), default="auto", show_default=True,
                     help="Secure channel protocol (auto: the card's, by the card data)."),
        click.option("--level", default="auto", show_default=True, metavar="HEX",
                     help="Security level: 00 01 03 11 13 33 (auto: the strongest the card offers)."),
        click.option("--isd", "isd_hex", default=_ISD_DEFAULT, show_default=True, metavar="AID",
                     help="AID of the issuer security domain."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


class _Keyed:
    """The parsed key options of a command."""

    def __init__(self, keys_spec: str, allow_test_keys: bool, keyset: str, key_version: str, scp: str, level: str,
                 isd_hex: str) -> None:
        from cardkit.sm.gp import check_level

        self.keys_spec, self.allow, self.keyset = keys_spec, allow_test_keys, keyset
        self.key_version = _byte(key_version, "--key-version", 0x7F)
        self.scp = None if scp == "auto" else int(scp)
        self.level = None if level == "auto" else int(check_level(_byte(level, "--level"),
                                                                  r_enc=self.scp != 2))
        self.isd = _hex(isd_hex, "--isd", 5, 16)

    def algs(self, card_data: CardData | None) -> list[Any]:
        from cardkit.crypto import Alg

        order = [Alg.AES, Alg.DES3]
        scp = self.scp or (card_data.scp[0][0] if card_data is not None and card_data.scp else None)
        if scp == 2:
            order.reverse()
        return order[:1] if self.scp else order

    def open(self, session: CardSession) -> tuple[GpChannel, GpKeySet, Keystore]:
        """SELECT the ISD and open the secure channel with the key set."""
        from cardkit.commands import gp
        from cardkit.errors import KeystoreError
        from cardkit.issuance.gp import gp_keyset, open_gp_channel, read_card_data

        session.send(gp.select_isd(self.isd), context={"step": "select ISD"})
        card_data = read_card_data(session)
        keystore = open_keys(self.keys_spec, self.allow)
        errors = []
        for alg in self.algs(card_data):
            try:
                keys = gp_keyset(keystore, self.keyset, alg, self.key_version)
                break
            except KeystoreError as exc:
                errors.append(str(exc))
        else:
            raise KeystoreError("; ".join(errors))
        channel = open_gp_channel(session, keys, level=self.level, key_version=self.key_version,
                                  isd_aid=self.isd, card_data=card_data)
        return channel, keys, keystore


def _emit(opts: Options, data: Any, lines: list[str]) -> None:
    if opts.json:
        click.echo(json.dumps(data, indent=2))
    else:
        for line in lines:
            click.echo(line)


def _entry(e: GetStatusEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"aid": e.aid.hex().upper(), "life_cycle": f"{e.life_cycle:02X}",
                           "life_cycle_name": e.life_cycle_name}
    if e.privileges:
        out["privileges"] = e.privileges.hex().upper()
        out["privilege_names"] = e.privilege_names
    if e.load_file_aid:
        out["load_file"] = e.load_file_aid.hex().upper()
    if e.modules:
        out["modules"] = [m.hex().upper() for m in e.modules]
    if e.version:
        out["version"] = e.version.hex().upper()
    return out


@click.group()
def gp() -> None:
    """GlobalPlatform: card information, registry, keys and life cycle through the issuer security domain.

    \b
    Examples:
      cardkit gp info
      cardkit gp list --keys keys/test/gp.toml --allow-test-keys --keyset gp-transport
    """


@gp.command()
@click.option("--isd", "isd_hex", default=_ISD_DEFAULT, show_default=True, metavar="AID", help="ISD AID.")
@click.pass_obj
def info(opts: Options, isd_hex: str) -> None:
    """What the ISD tells without keys: life cycle, card data (GP version, SCP and i), CPLC, key information,
    sequence counter, IIN and CIN.

    \b
    Example:
      cardkit --reader virtual:card.json gp info
    """
    from cardkit.commands import gp as gpc
    from cardkit.commands.gpdata import CardData, Cplc, KeyInfo, life_cycle_name
    from cardkit.readers import open_session
    from cardkit.sw import describe
    from cardkit.tlv import ber_decode, ber_find

    aid = _hex(isd_hex, "--isd", 5, 16)
    out: dict[str, Any] = {"isd": aid.hex().upper()}
    lines: list[str] = []
    with open_session(opts.reader, trace=opts.trace) as session:
        fci = session.send(gpc.select_isd(aid), context={"step": "select ISD"}).data
        lcs = ber_find(ber_decode(fci), 0x9F70) if fci else None
        out["life_cycle"] = f"{lcs.value[0]:02X}" if lcs is not None and lcs.value else None
        lines.append(f"ISD {aid.hex().upper()}: life cycle "
                     + (f"{lcs.value[0]:02X} {life_cycle_name('card', lcs.value[0])}" if lcs is not None and lcs.value
                        else "not in the FCI (GET STATUS needs keys: cardkit gp list)"))
        for tag, name in ((gpc.TAG_CARD_DATA, "card_data"), (gpc.TAG_CPLC, "cplc"), (gpc.TAG_KEY_INFO, "key_info"),
                          (gpc.TAG_SEQUENCE_COUNTER, "sequence_counter"), (gpc.TAG_IIN, "iin"), (gpc.TAG_CIN, "cin")):
            resp = session.transmit(gpc.get_data_gp(tag))
            if resp.sw != 0x9000:
                out[name] = {"error": f"{resp.sw:04X} {describe(resp.sw)}"}
                lines.append(f"{name}: not available ({resp.sw:04X} {describe(resp.sw)})")
                continue
            if name == "card_data":
                cd = CardData.parse(resp.data)
                out[name] = {"gp_version": cd.gp_version, "scp": [f"{n:02X}/{i:02X}" for n, i in cd.scp]}
                lines.append(f"card data: GP {cd.gp_version}, {', '.join(cd.scp_descriptions) or 'no SCP announced'}")
            elif name == "cplc":
                cplc = Cplc.parse(resp.data).to_dict()
                out[name] = cplc
                lines.append(f"CPLC: IC fabricator {cplc['ic_fabricator']}, IC type {cplc['ic_type']}, IC serial "
                             f"{cplc['ic_serial_number']}, batch {cplc['ic_batch_id']}")
            elif name == "key_info":
                ki = KeyInfo.parse(resp.data)
                out[name] = [{"id": e.key_id, "version": f"{e.key_version:02X}",
                              "type": [c.name for c in e.components], "bytes": [c.length for c in e.components]}
                             for e in ki.entries]
                for v in ki.versions():
                    keys = [e for e in ki.entries if e.key_version == v]
                    lines.append(f"key set {v:02X}: " + ", ".join(f"key {e.key_id:02X} {e.components[0].name} "
                                                                  f"{e.components[0].length * 8} bits" for e in keys))
            else:
                objs = ber_decode(resp.data)
                value = objs[0].value if len(objs) == 1 else resp.data
                out[name] = value.hex().upper()
                lines.append(f"{name.replace('_', ' ')}: {value.hex().upper()}")
    _emit(opts, out, lines)


@gp.command("list")
@_key_options
@click.pass_obj
def list_(opts: Options, /, **kw: Any) -> None:
    """The registry (GET STATUS): ISD and card life cycle, applications, load files with their modules.

    \b
    Example:
      cardkit gp list --keys keys/test/gp.toml --allow-test-keys --keyset gp-transport
    """
    from cardkit.issuance.gp import get_status_all
    from cardkit.readers import open_session
    from cardkit.sm.scp03 import Scp03Channel

    keyed = _Keyed(**kw)
    with open_session(opts.reader, trace=opts.trace) as session:
        channel, _, _ = keyed.open(session)
        data: dict[str, Any] = {"scp": f"{3 if isinstance(channel, Scp03Channel) else 2:02X}",
                "level": f"{int(channel.level):02X}", "key_version": f"{channel.key_version:02X}",
                "isd": [_entry(e) for e in get_status_all(session, "isd")],
                "applications": [_entry(e) for e in get_status_all(session, "apps")],
                "load_files": [_entry(e) for e in get_status_all(session, "load-files-modules")]}
    lines = [f"secure channel SCP{data['scp']} level {data['level']}, key set {data['key_version']}"]
    for title, key in (("ISD", "isd"), ("applications", "applications"), ("load files", "load_files")):
        lines.append(f"{title}:" + ("" if data[key] else " none"))
        for e in data[key]:
            extra = f" privileges {', '.join(e['privilege_names']) or e['privileges']}" if "privileges" in e else ""
            mods = f" modules {' '.join(e['modules'])}" if e.get("modules") else ""
            lines.append(f"  {e['aid']}  {e['life_cycle']} {e['life_cycle_name']}{extra}{mods}")
    _emit(opts, data, lines)


@gp.command("put-key")
@_key_options
@click.option("--new-keyset", required=True, metavar="NAME", help="Key set (in the same keystore) to put.")
@click.option("--new-version", required=True, metavar="HEX", help="Its key version number (01..7F).")
@click.option("--new-alg", type=click.Choice(["auto", "aes", "3des"]), default="auto", show_default=True,
              help="Algorithm of the new keys (aes on an SCP02 card migrates it to SCP03).")
@click.option("--replace-version", default="00", show_default=True, metavar="HEX",
              help="Key set to replace (00 = add a new key set).")
@click.pass_obj
def put_key(opts: Options, /, new_keyset: str, new_version: str, new_alg: str, replace_version: str,
            **kw: Any) -> None:
    """PUT KEY a key set (encrypted under the DEK), check the card's KCVs, then prove it with a fresh channel.

    \b
    Example:
      cardkit gp put-key --keys keys/test/gp.toml --allow-test-keys --keyset gp-transport \\
          --new-keyset gp-issuer --new-version 02 --replace-version 01
    """
    from cardkit.commands import gp as gpc
    from cardkit.crypto import Alg
    from cardkit.issuance.gp import gp_keyset, open_gp_channel, put_key_set
    from cardkit.readers import open_session

    keyed = _Keyed(**kw)
    version = _byte(new_version, "--new-version", 0x7F)
    old = _byte(replace_version, "--replace-version", 0x7F)
    if version == 0:
        raise click.BadParameter("--new-version must be 01..7F")
    with open_session(opts.reader, trace=opts.trace) as session:
        channel, keys, keystore = keyed.open(session)
        alg = keys.alg if new_alg == "auto" else (Alg.AES if new_alg == "aes" else Alg.DES3)
        new = gp_keyset(keystore, new_keyset, alg, version)
        put_key_set(session, channel, new, replace_version=old)
        for proc in session.processors:
            session.remove(proc)
        session.send(gpc.select_isd(keyed.isd), context={"step": "select ISD"})
        proof = open_gp_channel(session, new, level=keyed.level, key_version=version, isd_aid=keyed.isd)
    kcvs = {k: v.hex().upper() for k, v in new.kcvs().items()}
    data = {"version": f"{version:02X}", "alg": new.alg.value, "replaced": f"{old:02X}" if old else None,
            "kcv": kcvs, "proven_level": f"{int(proof.level):02X}"}
    _emit(opts, data, [f"key set {version:02X} ({new.alg.value}) {'replaces ' + format(old, '02X') if old else 'added'}"
                       f": KCV ENC {kcvs['enc']} MAC {kcvs['mac']} DEK {kcvs['dek']}; a fresh channel with it opened "
                       f"(level {data['proven_level']})"])


@gp.command("set-status")
@click.argument("state", type=click.Choice([*_STATES, "lock", "unlock"]))
@_key_options
@click.option("--app", "app_hex", metavar="AID", help="Lock/unlock this application instead of the card.")
@click.option("--yes", is_flag=True, help="Confirm an irreversible change (TERMINATED).")
@click.pass_obj
def set_status(opts: Options, /, state: str, app_hex: str | None, yes: bool, **kw: Any) -> None:
    """Card life cycle (OP_READY → initialized → secured ⇄ card-locked, any → terminated) or, with --app,
    lock/unlock an application. SECURED is reached through INITIALIZED when needed.

    \b
    Examples:
      cardkit gp set-status secured --keys keys/test/gp.toml --allow-test-keys --keyset gp-transport
      cardkit gp set-status lock --app F0434B495444530101 --keys ... --keyset gp-issuer
    """
    from cardkit.commands import gp as gpc
    from cardkit.issuance.gp import set_card_state
    from cardkit.readers import open_session

    keyed = _Keyed(**kw)
    if app_hex is None and state in ("lock", "unlock"):
        raise click.BadParameter("lock/unlock need --app AID (the card itself: card-locked / secured)")
    if app_hex is not None and state not in ("lock", "unlock"):
        raise click.BadParameter("with --app the state is lock or unlock")
    if state == "terminated" and not yes:
        raise click.BadParameter("TERMINATED is irreversible: add --yes")
    with open_session(opts.reader, trace=opts.trace) as session:
        keyed.open(session)
        if app_hex is not None:
            aid = _hex(app_hex, "--app", 5, 16)
            session.send(gpc.set_status("app", 0x80 if state == "lock" else 0x00, aid),
                         context={"step": "set status", "aid": aid.hex().upper()})
            data: dict[str, Any] = {"application": aid.hex().upper(), "state": state}
            line = f"application {aid.hex().upper()}: {state}ed"
        else:
            before = set_card_state(session, _STATES[state])
            data = {"card_life_cycle_before": f"{before:02X}", "card_life_cycle": f"{_STATES[state]:02X}"}
            line = f"card life cycle {before:02X} -> {_STATES[state]:02X} ({state.upper()})"
    _emit(opts, data, [line])


@gp.command("store-data")
@_key_options
@click.option("--app", "app_hex", required=True, metavar="AID", help="Application to personalize.")
@click.option("--data", "data_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='JSON file {"DGI": "hex data", ...} (may hold secrets: keep it 0600).')
@click.option("--sensitive", multiple=True, metavar="DGI", help="DGI sent encrypted under the DEK (repeatable).")
@click.pass_obj
def store_data(opts: Options, /, app_hex: str, data_file: Path, sensitive: tuple[str, ...], **kw: Any) -> None:
    """INSTALL [for personalization] an application, then STORE DATA its DGIs (sensitive ones encrypted).

    \b
    Example:
      cardkit gp store-data --app F0434B495444530101 --data dgis.json --sensitive 8010 \\
          --keys keys/test/gp.toml --allow-test-keys --keyset gp-transport
    """
    from cardkit.commands import gp as gpc
    from cardkit.issuance.gp import store_dgis
    from cardkit.readers import open_session

    keyed = _Keyed(**kw)
    aid = _hex(app_hex, "--app", 5, 16)
    try:
        raw = json.loads(data_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"cannot read {data_file.name}: {type(exc).__name__}", param_hint="--data") from None
    if not isinstance(raw, dict) or not raw:
        raise click.BadParameter('the data file must be a JSON object {"DGI": "hex", ...}', param_hint="--data")
    secret = {int.from_bytes(_hex(d, "--sensitive DGI", 2, 2), "big") for d in sensitive}
    dgis: list[tuple[int, bytes, bool]] = []
    for key, value in raw.items():
        dgi = int.from_bytes(_hex(str(key), "DGI", 2, 2), "big")
        if not isinstance(value, str):
            raise click.BadParameter(f"DGI {dgi:04X}: the value must be a hex string", param_hint="--data")
        dgis.append((dgi, _hex(value, f"DGI {dgi:04X} data", 0, 65535), dgi in secret))
    unknown = secret - {d for d, _, _ in dgis}
    if unknown:
        raise click.BadParameter(f"--sensitive names DGIs not in the data file: {sorted(f'{d:04X}' for d in unknown)}")
    with open_session(opts.reader, trace=opts.trace) as session:
        channel, _, _ = keyed.open(session)
        session.send(gpc.install_for_personalization(aid), context={"step": "install for personalization"})
        blocks = store_dgis(session, channel, sorted(dgis))
    _emit(opts, {"application": aid.hex().upper(), "dgis": len(dgis), "sensitive": len(secret), "blocks": blocks},
          [f"{len(dgis)} DGIs ({len(secret)} encrypted) stored in {aid.hex().upper()} in {blocks} STORE DATA blocks"])
