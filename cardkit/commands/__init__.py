"""Command builders and card-data decoders: bytes in, bytes out, no I/O.

- :mod:`cardkit.commands.iso` — ISO/IEC 7816-4/-8/-9 interindustry commands (FCP helpers re-exported).
- :mod:`cardkit.commands.fcp` — FCP build/parse helpers (ISO/IEC 7816-4 §7.4).
- :mod:`cardkit.commands.gp` — GlobalPlatform card-management commands (GPCS 2.3.1 §11) and DGI helpers.
- :mod:`cardkit.commands.gpdata` — decoders for CPLC, card recognition data, key information, GET STATUS.

Use them through their modules (``iso.select_aid(...)``, ``gp.store_data(...)``) so names stay unambiguous.
"""

from __future__ import annotations

from cardkit.commands import gp, gpdata, iso

__all__ = ["gp", "gpdata", "iso"]
