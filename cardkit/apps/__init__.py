"""Card applications as domain code over a :class:`~cardkit.session.CardSession`: the eMRTD (ICAO 9303 LDS1:
:mod:`cardkit.apps.lds`, :mod:`cardkit.apps.sod`, :mod:`cardkit.apps.mrtd`), diagnosis and snapshots.

Submodules are imported on demand; importing this package loads nothing else.
"""
