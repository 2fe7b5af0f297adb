"""`UnpairedPairs`: the training pairs of every dataset, each face as A with a random face of another
identity as B (EET learns from unpaired images)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class UnpairedPairs(Dataset):
    """Item i: face i as A and a random face of another identity as B.

    The draw uses torch's generator, which seed_everything seeds in the main process and the DataLoader
    per worker: first the partner's identity among the others (uniform over identities), then one of its
    faces (uniform), then `side` of A, then `side` of B. Subclasses give `side`, one face's sample dict
    (which may draw more, e.g. a random mirror)."""

    def __init__(self, identity: np.ndarray) -> None:
        ids = np.asarray(identity)
        self.identity = ids
        self.by_identity = {int(i): np.flatnonzero(ids == i) for i in np.unique(ids)}
        self.identities = sorted(self.by_identity)
        self.position = {identity: k for k, identity in enumerate(self.identities)}

    def __len__(self) -> int:
        return len(self.identity)

    def partner(self, i: int) -> int:
        """A random face of an identity other than face i's."""
        own = self.position[int(self.identity[i])]
        r = int(torch.randint(len(self.identities) - 1, ()))  # among the other identities only
        candidates = self.by_identity[self.identities[r if r < own else r + 1]]
        return int(candidates[int(torch.randint(len(candidates), ()))])

    def side(self, k: int) -> dict[str, Any]:
        """Face k's sample dict."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, dict[str, Any]]:
        j = self.partner(i)
        return {"a": self.side(i), "b": self.side(j)}
