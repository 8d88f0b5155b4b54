"""``cardkit keys``: key custody ceremonies and key tools.

Secrets (passphrases, PINs, key components, key values) never come from the command line: they come from
environment variables (``CARDKIT_KEYSTORE_PASSPHRASE``, ``CARDKIT_PKCS11_PIN``, ``CARDKIT_KEY_COMPONENT_n``,
a variable named with ``--key-env``/``--master-env``), files (``--key-file``, ``pin-source=``) or a prompt
with echo off. Output shows KCVs, never values; a derived key value goes only to a file created 0600.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cardkit.cli.main import Options

if TYPE_CHECKING:
    from cardkit.batch.journal import Journal
    from cardkit.crypto import Alg
    from cardkit.keys.ceremony import Ceremony
    from cardkit.keys.store import KeyCustody, KeyHandle

_SYMMETRIC = ("aes", "3des", "sm4")
_SIGNING = ("ecdsa-p256", "rsa-2048", "rsa-3072")
_KCV_METHODS = ("des3-zeros", "aes-gp", "aes-cmac", "sm4-zeros")

keys_option = click.option("--keys", "keys_uri", metavar="URI", envvar="CARDKIT_KEYS", required=True,
                           help="Keystore: store:PATH, pkcs11:token=LABEL[;module-path=..] or file:PATH (TEST).")
test_keys_option = click.option("--allow-test-keys", is_flag=True, help="Accept a TEST key file (file:PATH).")
operator_option = click.option("--operator", metavar="NAME", envvar="CARDKIT_OPERATOR", required=True,
                               help="Who runs the ceremony (journaled). Env: CARDKIT_OPERATOR.")
journal_option = click.option("--journal", "journal_path", metavar="FILE", envvar="CARDKIT_KEYS_JOURNAL",
                              help="Ceremony journal (default $CARDKIT_HOME/keys-journal.jsonl).")


def _prompt(question: str) -> str:
    return str(click.prompt(question[:1].upper() + question[1:], hide_input=True, err=True, default="",
                            show_default=False))


def open_keys_option(uri: str, allow_test_keys: bool = False, *, create: bool = False) -> KeyCustody:
    """Open the keystore of a ``--keys`` option value (prompting for a passphrase/PIN on the terminal when
    the environment does not hold it). Other commands' ``--keys`` options can call this."""
    from cardkit.keys.uri import open_keystore

    return open_keystore(uri, allow_test_keys=allow_test_keys, prompt=_prompt, create=create)


def _journal_path(path: str | None) -> Path:
    if path:
        return Path(path)
    from cardkit.readers import cardkit_home

    return cardkit_home() / "keys-journal.jsonl"


@contextmanager
def _ceremony(uri: str, allow_test_keys: bool, operator: str, journal_path: str | None) -> Iterator[Ceremony]:
    from cardkit.batch.journal import Journal
    from cardkit.keys.ceremony import Ceremony

    store = open_keys_option(uri, allow_test_keys)
    journal: Journal | None = None
    try:
        journal = Journal(_journal_path(journal_path))
        yield Ceremony(store, journal, operator)
    finally:
        if journal is not None:
            journal.close()
        store.close()


def _alg(text: str) -> Alg:
    from cardkit.keys.store import alg_of

    return alg_of(text)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _write_private(path: str, text: str) -> None:
    """Create ``path`` 0600 (refusing to overwrite) and write ``text``."""
    from cardkit.errors import KeystoreError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise KeystoreError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeystoreError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _hex_arg(text: str, what: str, length: int | None = None) -> bytes:
    cleaned = re.sub(r"[\s:]", "", text)
    if len(cleaned) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", cleaned):
        raise click.BadParameter(f"{what} must be hexadecimal bytes")
    data = bytes.fromhex(cleaned)
    if length is not None and len(data) != length:
        raise click.BadParameter(f"{what} must be {length} bytes, got {len(data)}")
    return data


@click.group()
def keys() -> None:
    """Key custody: keystores, ceremonies (journaled), KCVs, derivation, key identification.

    \b
    Keystores (--keys URI, or env CARDKIT_KEYS):
      store:PATH                    encrypted file (passphrase: env CARDKIT_KEYSTORE_PASSPHRASE or prompt)
      pkcs11:token=LABEL            HSM (module: env CARDKIT_PKCS11_MODULE or ;module-path=..,
                                    PIN: env CARDKIT_PKCS11_PIN, ;pin-source=FILE or prompt)
      file:PATH                     TEST key file (needs --allow-test-keys)
    \b
    Examples:
      cardkit keys init --keys store:bureau.cks
      cardkit keys generate ssc-issuer --alg 3des --keys store:bureau.cks --operator alice
      cardkit keys list --keys pkcs11:token=bureau
    """


@keys.command()
@keys_option
def init(keys_uri: str) -> None:
    """Create an empty encrypted keystore (the passphrase is asked twice, or taken from the environment).

    \b
    Example:
      cardkit keys init --keys store:/srv/cardkit/bureau.cks
    """
    from cardkit.errors import KeystoreError

    if not keys_uri.startswith("store:"):
        raise KeystoreError("only encrypted stores (store:PATH) are created by cardkit; initialise a PKCS#11 "
                            "token with its own tools (SoftHSM2: softhsm2-util --init-token)")
    store = open_keys_option(keys_uri, create=True)
    click.echo(f"created {store.label}")
    store.close()


@keys.command()
@click.argument("name")
@click.option("--alg", required=True, type=click.Choice(_SYMMETRIC + _SIGNING), help="Key algorithm.")
@click.option("--bits", type=int, help="Key length (AES 128/192/256, 3DES 128/192; default 128, KEK 256).")
@click.option("--usage", type=click.Choice(["master", "kek"]), default="master", show_default=True,
              help="master: diversify/encrypt/MAC; kek: wrap and unwrap only.")
@click.option("--extractable", is_flag=True, help="Allow the value to leave the keystore (wrapped, or for "
              "transport keys the engine uses in host memory). Default: never.")
@click.option("--rotate", is_flag=True, help="Add a new version when the name exists.")
@keys_option
@test_keys_option
@operator_option
@journal_option
@click.pass_obj
def generate(opts: Options, name: str, alg: str, bits: int | None, usage: str, extractable: bool, rotate: bool,
             keys_uri: str, allow_test_keys: bool, operator: str, journal_path: str | None) -> None:
    """Generate a key inside the keystore; shows its KCV.

    \b
    Examples:
      cardkit keys generate bureau-kek --alg aes --usage kek --keys pkcs11:token=bureau --operator alice
      cardkit keys generate station-sign --alg ecdsa-p256 --keys store:bureau.cks --operator alice
    """
    from cardkit.keys.store import SignAlg, Usage

    key_alg = SignAlg(alg) if alg in _SIGNING else _alg(alg)
    with _ceremony(keys_uri, allow_test_keys, operator, journal_path) as c:
        info = c.generate(name, key_alg, bits=bits, extractable=extractable, usage=Usage(usage), rotate=rotate)
    _show_info(opts, info)


def _show_info(opts: Options, info: Any) -> None:
    if opts.json:
        _echo_json(info.to_dict())
    else:
        click.echo(f"{info.name} v{info.version} {info.alg} ({info.bits} bits, {info.usage}"
                   f"{', extractable' if info.extractable else ''}): KCV {info.kcv} ({info.kcv_method})")


@keys.command("import")
@click.argument("name")
@click.option("--alg", required=True, type=click.Choice(_SYMMETRIC), help="Key algorithm.")
@click.option("--components", "count", type=click.IntRange(2, 3), required=True, help="Number of components.")
@click.option("--custodian", "custodians", multiple=True, required=True, metavar="NAME",
              help="Custodian of each component, in order (repeat; all distinct).")
@click.option("--component-kcv", "component_kcvs", multiple=True, metavar="KCV",
              help="Expected KCV of each component, in order (from the component forms); without them each "
                   "KCV is confirmed at the prompt.")
@click.option("--expect-kcv", metavar="KCV", help="Expected KCV of the combined key.")
@click.option("--usage", type=click.Choice(["master", "kek"]), default="master", show_default=True)
@click.option("--extractable", is_flag=True, help="Allow the value to leave the keystore (see generate).")
@click.option("--rotate", is_flag=True, help="Add a new version when the name exists.")
@keys_option
@test_keys_option
@operator_option
@journal_option
@click.pass_obj
def import_(opts: Options, name: str, alg: str, count: int, custodians: tuple[str, ...],
            component_kcvs: tuple[str, ...], expect_kcv: str | None, usage: str, extractable: bool, rotate: bool,
            keys_uri: str, allow_test_keys: bool, operator: str, journal_path: str | None) -> None:
    """Import a key from 2 or 3 components under dual control.

    Each component is entered separately (env CARDKIT_KEY_COMPONENT_1/_2/_3, or a hidden prompt), its KCV
    is shown and confirmed, and the components are XORed into the key. Every step is journaled.

    \b
    Example:
      cardkit keys import ssc-issuer --alg 3des --components 2 --custodian alice --custodian bob \\
          --keys pkcs11:token=bureau --operator carol
    """
    from cardkit.keys.entry import COMPONENT_ENV, obtain_secret, parse_hex_secret
    from cardkit.keys.store import Usage

    if component_kcvs and len(component_kcvs) != count:
        raise click.UsageError(f"give --component-kcv once per component ({count}), or not at all")
    key_alg = _alg(alg)

    def read(n: int) -> bytes:
        who = custodians[n - 1] if n <= len(custodians) else "?"
        text = obtain_secret(f"component {n} of {count} (custodian {who}, hex)", COMPONENT_ENV.format(n=n), _prompt)
        return parse_hex_secret(text, f"component {n}")

    def confirm(n: int, kcv_hex: str, method: str) -> bool:
        click.echo(f"component {n}: KCV {kcv_hex} ({method})", err=True)
        if component_kcvs:
            return component_kcvs[n - 1].strip().upper() == kcv_hex
        return click.confirm(f"Does KCV {kcv_hex} match the form of component {n}?", err=True)

    with _ceremony(keys_uri, allow_test_keys, operator, journal_path) as c:
        info = c.import_components(name, key_alg, count, read_component=read, confirm_component=confirm,
                                   custodians=custodians, expect_kcv=expect_kcv, extractable=extractable,
                                   usage=Usage(usage), rotate=rotate)
    _show_info(opts, info)


@keys.command("list")
@keys_option
@test_keys_option
@click.pass_obj
def list_(opts: Options, keys_uri: str, allow_test_keys: bool) -> None:
    """List keys: names, algorithms, versions, KCVs — never values.

    \b
    Example:
      cardkit keys list --keys store:/srv/cardkit/bureau.cks
    """
    store = open_keys_option(keys_uri, allow_test_keys)
    try:
        infos = store.entries()
    finally:
        store.close()
    if opts.json:
        _echo_json([i.to_dict() for i in infos])
        return
    if not infos:
        click.echo(f"{store.label}: no keys")
        return
    click.echo(f"{'NAME':24} {'VER':>3} {'ALG':10} {'BITS':>4} {'USAGE':6} {'EXTR':4} {'KCV':18} METHOD")
    for i in infos:
        extractable = "yes" if i.extractable else "no"
        click.echo(f"{i.name:24} {i.version:>3} {i.alg:10} {i.bits:>4} {i.usage:6} {extractable:4} {i.kcv:18} "
                   f"{i.kcv_method}")


@keys.command("export-kcv")
@click.argument("name")
@click.option("--alg", type=click.Choice(_SYMMETRIC), help="Needed when NAME exists for several algorithms.")
@click.option("--method", type=click.Choice(_KCV_METHODS), help="KCV method (default: the algorithm's GP one).")
@keys_option
@test_keys_option
@operator_option
@journal_option
@click.pass_obj
def export_kcv(opts: Options, name: str, alg: str | None, method: str | None, keys_uri: str, allow_test_keys: bool,
               operator: str, journal_path: str | None) -> None:
    """Show (and journal) the KCV of a key, e.g. for a key exchange letter.

    \b
    Example:
      cardkit keys export-kcv ssc-issuer --method des3-zeros --keys store:bureau.cks --operator alice
    """
    from cardkit.crypto import KcvMethod

    with _ceremony(keys_uri, allow_test_keys, operator, journal_path) as c:
        value, used = c.export_kcv(name, _alg(alg) if alg else None, KcvMethod(method) if method else None)
    if opts.json:
        _echo_json({"key_id": name, "kcv": value, "kcv_method": used})
    else:
        click.echo(f"{name}: KCV {value} ({used})")


@keys.command()
@click.argument("name")
@click.option("--alg", required=True, type=click.Choice(_SYMMETRIC))
@click.option("--kek", required=True, metavar="NAME", help="Key-encryption key (AES, usage kek).")
@click.option("--mechanism", type=click.Choice(["aes-kwp", "aes-kw"]), default="aes-kwp", show_default=True,
              help="aes-kwp = RFC 5649, aes-kw = RFC 3394.")
@click.option("--out", required=True, metavar="FILE", help="Wrapped key file to create (JSON, 0600).")
@keys_option
@test_keys_option
@operator_option
@journal_option
def wrap(name: str, alg: str, kek: str, mechanism: str, out: str, keys_uri: str, allow_test_keys: bool,
         operator: str, journal_path: str | None) -> None:
    """Wrap an extractable key under a KEK (AES key wrap) for transfer or backup.

    \b
    Example:
      cardkit keys wrap ssc-transport --alg 3des --kek bureau-kek --out transport.wrapped.json \\
          --keys pkcs11:token=bureau --operator alice
    """
    with _ceremony(keys_uri, allow_test_keys, operator, journal_path) as c:
        blob = c.wrap(name, _alg(alg), kek, mechanism=mechanism)
    _write_private(out, json.dumps(blob.to_dict(), indent=2) + "\n")
    click.echo(f"wrapped {blob.name} v{blob.version} (KCV {blob.kcv}) under {blob.kek} (KCV {blob.kek_kcv}) -> {out}")


@keys.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--kek", required=True, metavar="NAME", help="Key-encryption key (AES, usage kek).")
@click.option("--name", metavar="NAME", help="Name for the key (default: the name in the file).")
@click.option("--extractable", is_flag=True, help="Keep the unwrapped key extractable.")
@click.option("--rotate", is_flag=True, help="Add a new version when the name exists.")
@keys_option
@test_keys_option
@operator_option
@journal_option
@click.pass_obj
def unwrap(opts: Options, file: str, kek: str, name: str | None, extractable: bool, rotate: bool, keys_uri: str,
           allow_test_keys: bool, operator: str, journal_path: str | None) -> None:
    """Unwrap a wrapped key file into the keystore; the KCV in the file is checked.

    \b
    Example:
      cardkit keys unwrap transport.wrapped.json --kek bureau-kek --keys store:bureau.cks --operator bob
    """
    from cardkit.errors import KeystoreError
    from cardkit.keys.store import WrappedKey

    try:
        doc = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"cannot read wrapped key file {file}: {type(exc).__name__}") from None
    blob = WrappedKey.from_dict(doc)
    with _ceremony(keys_uri, allow_test_keys, operator, journal_path) as c:
        info = c.unwrap(blob, kek, name=name, extractable=extractable, rotate=rotate)
    _show_info(opts, info)


@keys.command()
@click.argument("name")
@click.option("--alg", type=click.Choice(_SYMMETRIC + _SIGNING), help="Needed when NAME has several algorithms.")
@click.option("--yes", is_flag=True, help="Do not ask; the deletion is still journaled.")
@keys_option
@test_keys_option
@operator_option
@journal_option
def delete(name: str, alg: str | None, yes: bool, keys_uri: str, allow_test_keys: bool, operator: str,
           journal_path: str | None) -> None:
    """Delete a key (all versions, or NAME@N) after confirmation: type the key's KCV.

    \b
    Example:
      cardkit keys delete old-kek@1 --alg aes --keys pkcs11:token=bureau --operator alice
    """
    from cardkit.keys.store import KeyInfo, SignAlg

    key_alg = None if alg is None else SignAlg(alg) if alg in _SIGNING else _alg(alg)

    def confirm(info: KeyInfo) -> bool:
        if yes:
            return True
        answer = click.prompt(f"Deleting {info.name} ({info.alg}, KCV {info.kcv}). Type the KCV to confirm",
                              err=True, default="", show_default=False)
        return str(answer).strip().upper() == info.kcv

    with _ceremony(keys_uri, allow_test_keys, operator, journal_path) as c:
        info = c.delete(name, key_alg, confirm=confirm)
    click.echo(f"deleted {name} ({info.alg}, KCV {info.kcv})")


@keys.command()
@click.argument("name")
@keys_option
@test_keys_option
def public(name: str, keys_uri: str, allow_test_keys: bool) -> None:
    """Print the public key (PEM) of a signing key, e.g. to certify it.

    \b
    Example:
      cardkit keys public station-sign --keys pkcs11:token=bureau
    """
    store = open_keys_option(keys_uri, allow_test_keys)
    try:
        signer = store.signer(name)
        pem = signer.public_key_pem()
        key_id = signer.key_id
    finally:
        store.close()
    click.echo(f"# {name} ({signer.alg.value}), key id {key_id}", err=True)
    click.echo(pem.decode("ascii").rstrip())


def _read_key(key_file: str | None, key_env: str | None, what: str) -> bytes:
    from cardkit.keys.entry import obtain_secret, parse_hex_secret, read_secret_file

    if key_file and key_env:
        raise click.UsageError(f"give the {what} either in a file or in an environment variable, not both")
    if key_file:
        return parse_hex_secret(read_secret_file(key_file, what), what)
    if key_env:
        return parse_hex_secret(obtain_secret(what, key_env, None), what)
    raise click.UsageError(f"the {what} comes from --{what.split()[0]}-file FILE or --{what.split()[0]}-env VAR "
                           "(never from the command line)")


@keys.command()
@click.option("--key-file", metavar="FILE", help="File holding the key in hex.")
@click.option("--key-env", metavar="VAR", help="Environment variable holding the key in hex.")
@click.option("--alg", type=click.Choice(_SYMMETRIC), help="Key algorithm (default: from --method).")
@click.option("--method", type=click.Choice(_KCV_METHODS),
              help="des3-zeros (3DES, 8x00), aes-gp (GP AES, 16x01), aes-cmac (ANSI X9.24-1 CMAC), sm4-zeros.")
@click.pass_obj
def kcv(opts: Options, key_file: str | None, key_env: str | None, alg: str | None, method: str | None) -> None:
    """Key check value of a key read from a file or an environment variable, with the method named.

    \b
    Examples:
      cardkit keys kcv --key-env MY_KEY --alg 3des
      cardkit keys kcv --key-file key.hex --method aes-cmac
    """
    from cardkit.crypto import KcvMethod, default_kcv_method
    from cardkit.crypto import kcv as compute_kcv
    from cardkit.keys.store import kcv_methods_for

    value = _read_key(key_file, key_env, "key")
    if method:
        m = KcvMethod(method)
        key_alg = {KcvMethod.DES3_ZEROS: "3des", KcvMethod.SM4_ZEROS: "sm4"}.get(m, "aes")
        if alg and alg != key_alg:
            raise click.UsageError(f"KCV method {method} is for {key_alg} keys, not {alg}")
        methods = [m]
    elif alg:
        methods = list(kcv_methods_for(_alg(alg)))
    else:
        raise click.UsageError("give --alg or --method")
    rows = [(m.value, compute_kcv(value, m).hex().upper()) for m in methods]
    if opts.json:
        _echo_json({m: v for m, v in rows})
        return
    for m_name, v in rows:
        default = " (default)" if alg and default_kcv_method(_alg(alg)).value == m_name else ""
        click.echo(f"KCV {v}  method {m_name}{default}")


@keys.command()
@click.option("--scheme", required=True, type=click.Choice(["emv", "visa2", "kdf3", "chain"]),
              help="emv (EMV CPS), visa2, kdf3 (GPPro AES), chain (multi-level left/right halves).")
@click.option("--master-file", metavar="FILE", help="File holding the master key in hex.")
@click.option("--master-env", metavar="VAR", help="Environment variable holding the master key in hex.")
@click.option("--keys", "keys_uri", metavar="URI", envvar="CARDKIT_KEYS",
              help="Or: a keystore holding the master (with --master). Env: CARDKIT_KEYS.")
@click.option("--master", "master_name", metavar="NAME", help="Master key name in --keys.")
@test_keys_option
@click.option("--alg", type=click.Choice(_SYMMETRIC), help="Master algorithm for chain (emv/visa2: 3des, kdf3: aes).")
@click.option("--kdd", metavar="HEX", help="10-byte key diversification data (emv, visa2, kdf3).")
@click.option("--key-id", "key_ids", type=click.IntRange(1, 255), multiple=True,
              help="Key id(s): 1 ENC, 2 MAC, 3 DEK (default: all three).")
@click.option("--level", "levels", metavar="HEX", multiple=True, help="8-byte level data for chain (repeat).")
@click.option("--out", metavar="FILE", help="Write the derived key value(s) to FILE (created 0600).")
@click.pass_obj
def derive(opts: Options, scheme: str, master_file: str | None, master_env: str | None, keys_uri: str | None,
           master_name: str | None, allow_test_keys: bool, alg: str | None, kdd: str | None,
           key_ids: tuple[int, ...], levels: tuple[str, ...], out: str | None) -> None:
    """Derive card keys from a master key (shows KCVs; values only with --out).

    \b
    Examples:
      cardkit keys derive --scheme emv --master-env KMC --kdd 00000000000000000000
      cardkit keys derive --scheme chain --alg 3des --keys pkcs11:token=bureau --master ssc-issuer \\
          --level 0000000000440300 --level 00000000A1B2C3D4
    """
    from cardkit.keys.store import SoftwareKeyHandle
    from cardkit.keys.tools import derive_with_handle

    key_alg = _alg(alg) if alg else _alg({"emv": "3des", "visa2": "3des", "kdf3": "aes"}.get(scheme, "aes"))
    if scheme != "chain" and alg and key_alg.value != {"emv": "3des", "visa2": "3des", "kdf3": "aes"}[scheme]:
        raise click.UsageError(f"{scheme} needs a {'aes' if scheme == 'kdf3' else '3des'} master")
    if scheme == "chain" and not alg:
        raise click.UsageError("chain needs --alg")
    store: KeyCustody | None = None
    if master_name:
        if not keys_uri or master_file or master_env:
            raise click.UsageError("a keystore master needs --keys URI and --master NAME (and no --master-file/env)")
        store = open_keys_option(keys_uri, allow_test_keys)
    try:
        results: list[tuple[str, bytes | None, str]] = []
        if scheme == "chain":
            data = [_hex_arg(lv, "level", 8) for lv in levels]
            if store is not None and master_name is not None:
                handle = store.derive_handle(master_name, key_alg, data)
                value = store.derive(master_name, key_alg, data).value if out else None
                results.append(("card key", value, handle.kcv()))
                handle.close()
            else:
                from cardkit.crypto.diversify import chain

                value = chain(_read_key(master_file, master_env, "master key"), key_alg, data)
                results.append(("card key", value, SoftwareKeyHandle("derived", key_alg, value).kcv()))
        else:
            if kdd is None:
                raise click.UsageError(f"{scheme} needs --kdd (10 bytes)")
            kdd_b = _hex_arg(kdd, "KDD", 10)
            master: KeyHandle = (store.handle(master_name, key_alg) if store is not None and master_name
                                 else SoftwareKeyHandle("master", key_alg,
                                                        _read_key(master_file, master_env, "master key")))
            try:
                for kid in key_ids or (1, 2, 3):
                    value = derive_with_handle(master, scheme, kdd_b, kid)
                    label = {1: "ENC", 2: "MAC", 3: "DEK"}.get(kid, f"id {kid:02X}")
                    results.append((f"{label} ({kid:02X})", value,
                                    SoftwareKeyHandle(label, key_alg, value).kcv()))
            finally:
                master.close()
    finally:
        if store is not None:
            store.close()
    if out:
        _write_private(out, "".join(f"{label}: {v.hex().upper()}\n" for label, v, _ in results if v is not None))
    if opts.json:
        _echo_json([{"key": label, "kcv": k} for label, _, k in results])
        return
    for label, _, k in results:
        click.echo(f"{label}: KCV {k}")
    if out:
        click.echo(f"values written to {out} (0600)")


@keys.command()
@click.option("--response", required=True, metavar="HEX", help="INITIALIZE UPDATE response (optionally with 9000).")
@click.option("--host-challenge", required=True, metavar="HEX", help="The host challenge that produced it.")
@keys_option
@test_keys_option
@click.option("--candidate", "candidates", multiple=True, metavar="NAME", help="Only these keys / key sets.")
@click.option("--isd-aid", metavar="HEX", help="Security domain AID (proves the ENC key of pseudo-random SCP03).")
@click.pass_obj
def identify(opts: Options, response: str, host_challenge: str, keys_uri: str, allow_test_keys: bool,
             candidates: tuple[str, ...], isd_aid: str | None) -> None:
    """Offline key identification: which keystore key set and diversification produced this response.

    Nothing is sent to a card. Key sets: NAME-enc/-mac/-dek triples, or one key used for all three.

    \b
    Example:
      cardkit keys identify --response 0000...9000 --host-challenge 0102030405060708 --keys store:bureau.cks
    """
    from cardkit.errors import AuthenticationError
    from cardkit.keys.tools import identify_with_keystore

    resp = _hex_arg(response, "response")
    hc = _hex_arg(host_challenge, "host challenge")
    aid = _hex_arg(isd_aid, "ISD AID") if isd_aid else None
    store = open_keys_option(keys_uri, allow_test_keys)
    try:
        hits = identify_with_keystore(resp, hc, store, names=candidates or None, isd_aid=aid)
    finally:
        store.close()
    if opts.json:
        _echo_json([{"candidate": h.label, "scheme": h.scheme, "protocol": h.protocol, "proven": list(h.proven),
                     "card_kcvs": h.card_kcvs} for h in hits])
    for h in hits if not opts.json else []:
        click.echo(h.explanation)
    if not hits:
        raise AuthenticationError(f"no key set in {store.label} reproduces the card cryptogram (tried every "
                                  "applicable diversification)")
