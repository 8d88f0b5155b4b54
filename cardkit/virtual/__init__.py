"""The virtual card: an ISO 7816-4/-9 card OS (file system, access rules, PINs, keys, secure messaging hook).

See :mod:`cardkit.virtual.card` for the command set, :mod:`cardkit.virtual.security` for PINs, keys and the
PUT KEY format, :mod:`cardkit.virtual.image` for saving cards, :mod:`cardkit.virtual.faults` for power loss.
"""

from __future__ import annotations

from cardkit.virtual.card import BLANK_MF_RULES, Application, CardOptions, Channel, VirtualCard, atr_for
from cardkit.virtual.faults import CardGone, CorruptingCard, power_loss_at, remove_at
from cardkit.virtual.fs import DF, EF, EfType, FileNode, Lcs, SwError, VirtualCardError, build_fcp, parse_fcp
from cardkit.virtual.image import CardFeeder, ImageError, card_from_dict, card_to_dict, load_image, save_image
from cardkit.virtual.security import (
    AuthResult,
    KeyObject,
    KeyUsage,
    MutualAuthHandler,
    PinObject,
    SecurityState,
    SmSession,
)

__all__ = [
    "BLANK_MF_RULES",
    "DF",
    "EF",
    "Application",
    "AuthResult",
    "CardFeeder",
    "CardGone",
    "CardOptions",
    "Channel",
    "CorruptingCard",
    "EfType",
    "FileNode",
    "ImageError",
    "KeyObject",
    "KeyUsage",
    "Lcs",
    "MutualAuthHandler",
    "PinObject",
    "SecurityState",
    "SmSession",
    "SwError",
    "VirtualCard",
    "VirtualCardError",
    "atr_for",
    "build_fcp",
    "card_from_dict",
    "card_to_dict",
    "load_image",
    "parse_fcp",
    "power_loss_at",
    "remove_at",
    "save_image",
]
