"""The synthetic users' tastes by user type, and their noisy ratings at
the seven levels."""

from __future__ import annotations

import numpy as np

SHARED = 0.7  # rho: how much of a user's category taste everyone shares
SCALE, NOISE = 0.25, 0.08


TYPES = ("shared", "opposite", "orthogonal", "narrow")


class Tastes:
    """Noiseless preferences of the synthetic users, by user type. Every
    user's category preference is drawn around one shared category taste
    (``shared``, what the global head learns from the ``--others`` users):

    * ``shared``: ``rho * shared + sqrt(1 - rho^2) * own``, as the others;
    * ``opposite``: the same with ``-rho``, a taste turned round;
    * ``orthogonal``: an own category taste with the shared one projected
      out (uncorrelated with it over the categories), of the same spread;
    * ``narrow``: one category liked, every other one alike.

    All but ``narrow`` add a smaller subcategory preference of their own.
    The ``shared`` users are drawn as before user types existed, so the
    first ones are the same users as in earlier runs."""

    def __init__(self, categories: list[str], subcategories: list[str], others: int, users: int, seed: int) -> None:
        self.seed = seed
        cats, subs = sorted(set(categories)), sorted(set(subcategories))
        self.ci = np.array([cats.index(c) for c in categories])
        self.si = np.array([subs.index(s) for s in subcategories])
        self.categories, self.subcategories = len(cats), len(subs)
        rng = np.random.default_rng(seed)
        self.shared = rng.normal(size=len(cats))
        self.drawn = []
        for _ in range(others + users):
            own = SHARED * self.shared + np.sqrt(1 - SHARED**2) * rng.normal(size=len(cats))
            sub = 0.25 * rng.normal(size=len(subs))
            self.drawn.append(own[self.ci] + sub[self.si])
        self.others = others

    def other(self, u: int) -> np.ndarray:
        """The preference of the u-th user behind the global head."""
        return self.drawn[u]

    def user(self, kind: str, k: int) -> np.ndarray:
        """The preference of the k-th user of a type."""
        if kind == "shared":
            return self.drawn[self.others + k]
        rng = np.random.default_rng([self.seed, 7, TYPES.index(kind), k])
        if kind == "narrow":
            return np.where(self.ci == rng.integers(self.categories), 1.5, -0.5)
        if kind == "opposite":
            own = -SHARED * self.shared + np.sqrt(1 - SHARED**2) * rng.normal(size=self.categories)
        else:
            shared = self.shared - self.shared.mean()
            own = rng.normal(size=self.categories)
            own -= own.mean()
            own -= (own @ shared) / (shared @ shared) * shared
            own *= np.linalg.norm(shared) / np.linalg.norm(own)
        sub = 0.25 * rng.normal(size=self.subcategories)
        return own[self.ci] + sub[self.si]

    def uid(self, kind: str, k: int) -> int:
        """The user's number in the split seeds (the shared users' as before)."""
        return self.others + k if kind == "shared" else 1000 * TYPES.index(kind) + k


def rate(preference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noisy ratings at the seven levels."""
    raw = 0.5 + SCALE * preference + rng.normal(0.0, NOISE, preference.shape)
    return np.round(np.clip(raw, 0.0, 1.0) * 6) / 6
