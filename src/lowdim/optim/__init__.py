"""Subspace optimisers, each a `torch.optim.Optimizer`: what they share (one parameter, the
model's flat vector) in `optimizer`, their mathematics in `functional`."""

from .functional import armijo_accepts, bfgs_update
from .padamw import PAdamW
from .pbfgs import PBFGS
from .psgd import PSGD
from .rbd import RBD, directions

__all__ = ["PAdamW", "PBFGS", "PSGD", "RBD", "armijo_accepts", "bfgs_update", "directions"]
