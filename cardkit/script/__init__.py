"""APDU scripts: a superset of pcsc-tools' ``scriptor`` files, run on a card session.

* :mod:`cardkit.script.parser` — the language (see its docstring for every statement and the pattern syntax);
* :mod:`cardkit.script.runner` — :class:`ScriptRunner` executes statements on a
  :class:`~cardkit.session.CardSession` and reports :class:`Event` values;
* :mod:`cardkit.script.channels` — ``open scp03|scp02|bac|sm`` with keys from a keystore;
* :mod:`cardkit.script.browse` — SELECT targets, ``ls``/``cd``/``cat`` over the card's file system;
* :mod:`cardkit.script.tracefile` — command names, decoded responses, trace files (show, to replay).

Example::

    from cardkit.readers import open_session
    from cardkit.script import ScriptRunner, parse_text

    with open_session("virtual") as card:
        ScriptRunner(card, on_event=lambda e: print(e.text)).run(parse_text("00A4040000 => * 9000"))
"""

from __future__ import annotations

from cardkit.script.parser import Location, Pattern, ScriptError, Statement, parse_file, parse_line, parse_text
from cardkit.script.runner import Event, ExpectationFailed, RunResult, ScriptRunner, Variable, match_pattern

__all__ = [
    "Event", "ExpectationFailed", "Location", "Pattern", "RunResult", "ScriptError", "ScriptRunner", "Statement",
    "Variable", "match_pattern", "parse_file", "parse_line", "parse_text",
]
