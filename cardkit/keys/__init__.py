"""Key custody: keystores (TEST files, encrypted store, PKCS#11), key URIs, ceremonies.

See :mod:`cardkit.keys.store` (the interfaces), :mod:`cardkit.keys.uri` (``open_keystore``),
:mod:`cardkit.keys.ceremony` and ``docs/keys.md``. Nothing is imported here, so ``import cardkit.keys.store``
stays cheap.
"""
