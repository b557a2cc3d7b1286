"""Seeds derived from a tuple of parts, so that independent random streams never collide.

Adding seeds together (seed + epoch + worker) makes different tuples share a stream; hashing the
whole tuple does not. Every random stream in lowdim (data order, augmentation, label noise,
random bases) is keyed this way, so it can be regenerated alone, on any worker, after a restart.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that is a pure function of `parts` (their `str` forms, in order)."""
    key = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def generator(*parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded with `derive_seed(*parts)`."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*parts))
    return g
