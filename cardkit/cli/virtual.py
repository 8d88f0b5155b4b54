"""``cardkit virtual``: serve virtual cards to pcscd (every PC/SC application sees them), create and show images.

A card image holds keys and PINs in clear (it is a test card): images are written 0600 and ``show`` prints keys
by key check value and PINs by their counters only — never a value, never file contents.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cardkit.cli.main import Options

if TYPE_CHECKING:
    from cardkit.virtual.card import VirtualCard
    from cardkit.virtual.fs import DF, FileNode

log = logging.getLogger(__name__)

#: Algorithms of the TEST transport key ``ssc-transport`` in keys/test/ssc.toml.
TEST_ALGS = ("sm4", "3des")
#: vpcd's default port for the first reader slot (Debian /etc/reader.conf.d/vpcd: 0x8C7B).
DEFAULT_PORT = 35963
_TEST_KEY_WARNING = ("warning: blank virtual cards get the TEST transport key 'ssc-transport' ({alg}) from "
                     "keys/test/ssc.toml — a published test value: never use such a card for real data")


@click.group()
def virtual() -> None:
    """Virtual cards: serve them to pcscd through vpcd, create blank images, show an image.

    \b
    Examples:
      cardkit virtual new --out card.json
      cardkit virtual serve --image card.json
      cardkit virtual serve --blank --slots 4 --pcscd
      cardkit virtual show card.json
    """


# ---------------------------------------------------------------------------------------------------- new


def _serial(text: str | None) -> bytes:
    if text is None:
        return secrets.token_bytes(4)
    cleaned = re.sub(r"[\s:]", "", text)
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", cleaned):
        raise click.BadParameter(f"a chip serial is 4 bytes in hex (8 digits), got {text!r}", param_hint="--serial")
    return bytes.fromhex(cleaned)


def _test_transport_key(alg_name: str) -> bytes:
    from cardkit.keys.store import TestKeyFile, alg_of
    from cardkit.readers import TEST_KEYS

    return TestKeyFile(TEST_KEYS, allow_test_keys=True).key("ssc-transport", alg_of(alg_name)).value


@virtual.command()
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Image file to create (JSON, mode 0600).")
@click.option("--alg", "alg_name", type=click.Choice(TEST_ALGS), default="sm4", show_default=True,
              help="Algorithm of the card's transport key (MF key 00).")
@click.option("--serial", metavar="HEX", help="4-byte chip serial (8 hex digits); default: random.")
@click.option("--force", is_flag=True, help="Overwrite an existing image.")
@click.pass_obj
def new(opts: Options, out: Path, alg_name: str, serial: str | None, force: bool) -> None:
    """Create a blank virtual card image: an empty MF and the TEST transport key as MF key 00.

    The transport key is the published TEST key 'ssc-transport' of keys/test/ssc.toml (a warning says so);
    `cardkit personalize --reader virtual:FILE` can then issue the card.

    \b
    Examples:
      cardkit virtual new --out card.json
      cardkit virtual new --out card-3des.json --alg 3des --serial 0102A0B0
    """
    from cardkit.crypto import default_kcv_method, kcv
    from cardkit.keys.store import alg_of
    from cardkit.readers import new_virtual_card

    chip = _serial(serial)
    if out.exists() and not force:
        raise click.BadParameter(f"{out} exists (use --force to overwrite it)", param_hint="--out")
    if not out.parent.is_dir():
        raise click.BadParameter(f"directory {out.parent} does not exist", param_hint="--out")
    alg = alg_of(alg_name)
    key = _test_transport_key(alg_name)
    card = new_virtual_card(chip, alg=alg, transport_key=key)
    card.save(out)
    click.echo(_TEST_KEY_WARNING.format(alg=alg_name), err=True)
    check = kcv(key, default_kcv_method(alg)).hex().upper()
    if opts.json:
        click.echo(json.dumps({"image": str(out), "serial": chip.hex().upper(), "atr": card.atr.hex().upper(),
                               "transport_key": {"name": "ssc-transport", "alg": alg_name, "kcv": check,
                                                 "test": True}}, indent=2))
        return
    click.echo(f"created blank card image {out}: chip serial {chip.hex().upper()}, ATR {card.atr.hex().upper()}")
    click.echo(f"  MF key 00 = TEST transport key 'ssc-transport' ({alg_name}, KCV {check})")


# --------------------------------------------------------------------------------------------------- show


def _name_text(name: bytes) -> str | None:
    """The DF name as text when it is printable GBK (SSC application names are GBK), else None."""
    try:
        text = name.decode("gbk")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def _secret_rows(df: DF) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    from cardkit.crypto import default_kcv_method, kcv

    keys = []
    for k in sorted(df.keys.values(), key=lambda k: k.ref):
        method = default_kcv_method(k.alg)
        keys.append({"ref": f"{k.ref:02X}", "alg": k.alg.value, "usage": k.usage.name.lower().replace("_", "-"),
                     "kcv": kcv(k.value, method).hex().upper(), "kcv_method": method.value,
                     "tries_left": k.tries_left, "max_tries": k.max_tries, "blocked": k.blocked,
                     "rules": k.rules.to_text()})

    def pins(objs: dict[int, Any]) -> list[dict[str, Any]]:
        return [{"ref": f"{p.ref:02X}", "tries_left": p.tries_left, "max_tries": p.max_tries, "blocked": p.blocked,
                 "rules": p.rules.to_text()} for p in sorted(objs.values(), key=lambda p: p.ref)]

    return keys, pins(df.pins), pins(df.puks)


def _node(node: FileNode) -> dict[str, Any]:
    from cardkit.virtual.fs import DF, EF

    out: dict[str, Any] = {"fid": None if node.fid is None else f"{node.fid:04X}", "path": node.path,
                           "lcs": node.lcs.name.lower(), "rules": node.rules.to_text()}
    if isinstance(node, DF):
        keys, pins, puks = _secret_rows(node)
        out.update(type="DF", name=node.name.hex().upper() if node.name else None,
                   name_text=_name_text(node.name) if node.name else None, keys=keys, pins=pins, puks=puks,
                   children=[_node(c) for c in node.children])
    elif isinstance(node, EF):
        out.update(type="EF", structure=node.structure.name.lower().replace("_", "-"), sfi=node.sfi)
        if node.structure.is_record:
            out.update(records=len(node.records), record_count=node.record_count, record_size=node.record_size,
                       bytes_used=sum(len(r) for r in node.records))
        else:
            out.update(size=node.size, bytes_used=len(node.data.rstrip(b"\x00")))
    return out


def describe_card(card: VirtualCard) -> dict[str, Any]:
    """Everything about a card image except secret values and file contents (JSON-ready)."""
    return {
        "serial": card.serial.hex().upper(), "atr": card.atr.hex().upper(), "terminated": card.terminated,
        "memory": {"used": card.memory_used(), "size": card.options.memory_size},
        "data_objects": [{"tag": f"{t:04X}", "length": len(v)} for t, v in sorted(card.data_objects.items())],
        "applications": [aid.hex().upper() for aid in card.applications],
        "mf": _node(card.mf),
    }


def _rules_text(rules: dict[str, str]) -> str:
    return " ".join(f"{op}={rule}" for op, rule in rules.items()) or "(no rules: everything denied)"


def _tries(row: dict[str, Any]) -> str:
    return f"tries {row['tries_left']}/{row['max_tries']}" + ("  BLOCKED" if row["blocked"] else "")


def _render(node: dict[str, Any], depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    if node["type"] == "DF":
        label = "MF" if depth == 0 else "DF"
        name = ""
        if node["name"]:
            name = f" name {node['name']}" + (f" ({node['name_text']})" if node["name_text"] else "")
        lines.append(f"{pad}{label} {node['fid']}{name}  [{node['lcs']}]  {_rules_text(node['rules'])}")
        for k in node["keys"]:
            lines.append(f"{pad}  key {k['ref']}  {k['alg']} usage {k['usage']}  KCV {k['kcv']} ({k['kcv_method']})"
                         f"  {_tries(k)}")
        for kind, rows in (("PIN", node["pins"]), ("PUK", node["puks"])):
            for p in rows:
                lines.append(f"{pad}  {kind} {p['ref']}  {_tries(p)}")
        for child in node["children"]:
            _render(child, depth + 1, lines)
        return
    sfi = f" sfi {node['sfi']}" if node["sfi"] is not None else ""
    if "records" in node:
        shape = (f"{node['records']}/{node['record_count']} records of <= {node['record_size']} bytes, "
                 f"{node['bytes_used']} bytes used")
    else:
        shape = f"{node['size']} bytes, {node['bytes_used']} used"
    lines.append(f"{pad}EF {node['fid']} {node['structure']}{sfi}  {shape}  [{node['lcs']}]  "
                 f"{_rules_text(node['rules'])}")


@virtual.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def show(opts: Options, image: Path) -> None:
    """Show a card image: the file tree with access rules, keys by KCV, PIN/PUK try counters.

    Key values, PIN values and file contents are never shown (file sizes and record counts are).

    \b
    Examples:
      cardkit virtual show card.json
      cardkit --json virtual show ~/.cardkit/virtual-card.json
    """
    from cardkit.virtual.image import load_image

    card = load_image(image)
    info = describe_card(card)
    if opts.json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    mem = info["memory"]
    click.echo(f"card image {image.name}: chip serial {info['serial']}, ATR {info['atr']}")
    dos = ", ".join(f"{d['tag']} ({d['length']} bytes)" for d in info["data_objects"]) or "none"
    click.echo(f"  terminated: {'yes' if info['terminated'] else 'no'}; memory {mem['used']}/{mem['size']} bytes; "
               f"data objects: {dos}")
    lines: list[str] = []
    _render(info["mf"], 0, lines)
    for line in lines:
        click.echo(line)


# -------------------------------------------------------------------------------------------------- serve


def _load_cards(images: tuple[Path, ...], blanks: int, alg_name: str) -> list[tuple[Any, Path | None]]:
    from cardkit.keys.store import alg_of
    from cardkit.readers import load_virtual_card, new_virtual_card

    cards: list[tuple[Any, Path | None]] = []
    for path in images:
        if not path.exists():
            raise click.BadParameter(f"image {path} does not exist (create one with: cardkit virtual new --out "
                                     f"{path})", param_hint="--image")
        cards.append((load_virtual_card(path), path))
    if blanks:
        key = _test_transport_key(alg_name)
        alg = alg_of(alg_name)
        cards.extend((new_virtual_card(alg=alg, transport_key=key), None) for _ in range(blanks))
    return cards


def _save_all(cards: list[tuple[Any, Path | None]], save_dir: Path | None) -> tuple[list[Path], list[str]]:
    saved: list[Path] = []
    failed: list[str] = []
    for card, path in cards:
        target = path
        if target is None and save_dir is not None:
            target = save_dir / f"card-{card.serial.hex().upper()}.json"
        if target is None:
            continue
        try:
            card.save(target)
            saved.append(target)
        except OSError as exc:
            failed.append(f"{target}: {exc.strerror or type(exc).__name__}")
    return saved, failed


@virtual.command()
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Card image to serve (repeat for more slots); saved back on exit.")
@click.option("--blank", is_flag=True, help="Fill the remaining slots with blank cards (TEST transport key).")
@click.option("--alg", "alg_name", type=click.Choice(TEST_ALGS), default="sm4", show_default=True,
              help="Transport-key algorithm of blank cards.")
@click.option("--port", type=click.IntRange(1, 0xFFFF), default=DEFAULT_PORT, show_default=True,
              help="vpcd TCP port of the first slot; slot i uses PORT+i.")
@click.option("--slots", type=click.IntRange(1, 16), default=None,
              help="Number of reader slots (default: one per --image, or 1).")
@click.option("--pcscd", "own_pcscd", is_flag=True,
              help="Start a private pcscd with SLOTS vpcd readers (stopped on exit; a running pcscd that already "
                   "offers these readers is used instead).")
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Save blank cards here on exit (card-SERIAL.json); without it they are discarded.")
@click.pass_obj
def serve(opts: Options, images: tuple[Path, ...], blank: bool, alg_name: str, port: int, slots: int | None,
          own_pcscd: bool, save_dir: Path | None) -> None:
    """Serve virtual cards in vpcd reader slots so pcscd and every PC/SC application (pyscard, OpenSC,
    pcsc-tools) sees them. Runs until Ctrl-C or SIGTERM, then pulls the cards and saves the images.

    Each slot connects to vpcd on its port (reconnecting by itself when pcscd restarts). Debian's stock vpcd
    readers 'Virtual PCD 00 00' / '00 01' listen on 35963 / 35964.

    \b
    Examples:
      cardkit virtual serve --image card.json
      cardkit virtual serve --image a.json --image b.json --pcscd
      cardkit virtual serve --blank --slots 8 --pcscd --save-dir out/
    """
    n = slots if slots is not None else max(len(images), 1)
    if not images and not blank:
        raise click.UsageError("nothing to serve: give --image FILE (repeatable) or --blank")
    if len(images) > n:
        raise click.UsageError(f"{len(images)} images for {n} slots: raise --slots")
    if len(images) < n and not blank:
        raise click.UsageError(f"{len(images)} image(s) for {n} slots: add --blank to fill the rest, or lower --slots")
    if len({p.resolve() for p in images}) != len(images):
        raise click.UsageError("the same image is given twice (two slots cannot save into one file)")
    if port + n - 1 > 0xFFFF:
        raise click.BadParameter(f"slots need ports {port}..{port + n - 1}", param_hint="--port")
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cards = _load_cards(images, n - len(images), alg_name)
    if len(images) < n:
        click.echo(_TEST_KEY_WARNING.format(alg=alg_name), err=True)
    _run(opts, cards, port, own_pcscd, save_dir)


def _run(opts: Options, cards: list[tuple[Any, Path | None]], port: int, own_pcscd: bool,
         save_dir: Path | None) -> None:
    from cardkit.virtual.serve import CardSlots, serve_many, wait_for_signal

    daemon = None
    group: CardSlots | None = None
    try:
        if own_pcscd:
            from cardkit.pcscd import PcscDaemon

            daemon = PcscDaemon(readers=len(cards), base_port=port).start()
            group = serve_many([c for c, _ in cards], daemon)
        else:
            group = CardSlots.consecutive([c for c, _ in cards], port).start()
            group.wait_connected(1.0)
        rows = []
        for i, ((card, path), (reader, slot_port, _)) in enumerate(zip(cards, group, strict=True)):
            rows.append({"slot": i, "port": slot_port, "reader": reader, "serial": card.serial.hex().upper(),
                         "atr": card.atr.hex().upper(), "image": str(path) if path else None,
                         "connected": group.servers[i].connected})
        if opts.json:
            click.echo(json.dumps({"serving": rows, "pcscd": daemon.pid if daemon is not None else None}))
        else:
            for r in rows:
                where = r["reader"] or ("connected to vpcd" if r["connected"] else "waiting for vpcd")
                click.echo(f"slot {r['slot']}: port {r['port']} ({where}) card {r['serial']} "
                           f"{'image ' + r['image'] if r['image'] else 'blank'}")
            owner = f" with a private pcscd (pid {daemon.pid})" if daemon is not None and daemon.owned else ""
            click.echo(f"serving {len(cards)} card(s){owner}; Ctrl-C or SIGTERM stops and saves the images")
        signum = wait_for_signal()
        log.info("stopping on signal %s", signum)
    finally:
        if group is not None:
            group.stop()
        saved, failed = _save_all(cards, save_dir)
        if daemon is not None:
            daemon.stop()
    for path in saved:
        click.echo(f"saved {path}")
    if failed:
        raise OSError(f"could not save {len(failed)} image(s): {'; '.join(failed)}")
    click.echo(f"stopped; {group.apdus if group else 0} APDUs answered")
