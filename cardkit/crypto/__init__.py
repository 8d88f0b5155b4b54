"""Cryptographic primitives for card protocols, composed from ``cryptography``.

3DES/DES live only in :mod:`cardkit.crypto.legacy`. Everything takes and returns ``bytes``.
"""

from __future__ import annotations

from cardkit.crypto.diversify import (
    EMV_CPS_TEMPLATE,
    VISA2_TEMPLATE,
    DiversificationTemplate,
    TemplateError,
    chain,
    emv_cps,
    kdf3,
    visa2,
)
from cardkit.crypto.kcv import KcvMethod, default_kcv_method, kcv
from cardkit.crypto.kdf import adjust_des_parity, icao_kdf, scp03_kdf, sp800_108_cmac
from cardkit.crypto.legacy import (
    des3_cbc_decrypt,
    des3_cbc_encrypt,
    des3_cbc_mac,
    des3_cmac,
    des3_ecb_decrypt,
    des3_ecb_encrypt,
    des3_key24,
    des_cbc_decrypt,
    des_cbc_encrypt,
    des_ecb_decrypt,
    des_ecb_encrypt,
    retail_mac,
)
from cardkit.crypto.mac import aes_cmac, cmac, cmac_verify, sm4_cmac
from cardkit.crypto.padding import pad_m1, pad_m2, unpad_m2
from cardkit.crypto.sym import (
    Alg,
    block_size,
    cbc_decrypt,
    cbc_encrypt,
    check_key,
    ecb_decrypt,
    ecb_encrypt,
    sm3,
)

__all__ = [
    "EMV_CPS_TEMPLATE",
    "VISA2_TEMPLATE",
    "Alg",
    "DiversificationTemplate",
    "KcvMethod",
    "TemplateError",
    "adjust_des_parity",
    "aes_cmac",
    "block_size",
    "cbc_decrypt",
    "cbc_encrypt",
    "chain",
    "check_key",
    "cmac",
    "cmac_verify",
    "default_kcv_method",
    "des3_cbc_decrypt",
    "des3_cbc_encrypt",
    "des3_cbc_mac",
    "des3_cmac",
    "des3_ecb_decrypt",
    "des3_ecb_encrypt",
    "des3_key24",
    "des_cbc_decrypt",
    "des_cbc_encrypt",
    "des_ecb_decrypt",
    "des_ecb_encrypt",
    "ecb_decrypt",
    "ecb_encrypt",
    "emv_cps",
    "icao_kdf",
    "kcv",
    "kdf3",
    "pad_m1",
    "pad_m2",
    "retail_mac",
    "scp03_kdf",
    "sm3",
    "sm4_cmac",
    "sp800_108_cmac",
    "unpad_m2",
    "visa2",
]
