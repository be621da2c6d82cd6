"""Peptide lists and roles from the workflow configuration.

A peptide's role decides how long its MD runs and how the report labels it: ids listed under
``peptides.train`` or ``peptides.val`` are training peptides, every other id (listed under
``peptides.test`` or not listed at all) is a held-out test peptide. An id in two lists is a
configuration error, because it would leak a test peptide into training.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

from jamun.sequence import RESIDUES, validate_sequence

LISTS = ("train", "val", "test")  # the peptide lists of the config, by key


def read_peptide_list(path: str | Path) -> list[str]:
    """Read one-letter peptide ids, one per line; blank lines and ``#`` comments are ignored.

    Raises
    ------
    FileNotFoundError
        If the list does not exist.
    ValueError
        If a line is not a valid sequence or an id is repeated; the message names file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"peptide list {path} does not exist")
    ids: list[str] = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            peptide = validate_sequence(text)
        except ValueError as error:
            raise ValueError(f"{path}:{line_number}: {error}") from None
        if peptide in ids:
            raise ValueError(f"{path}:{line_number}: peptide {peptide!r} is listed twice")
        ids.append(peptide)
    return ids


@dataclass(frozen=True)
class PeptideRoles:
    """The train / val / test lists of a configuration, checked for overlaps, and the training
    peptides that are evaluated too (``peptides.evaluate_train``)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    evaluate_train: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, peptides_cfg: dict) -> "PeptideRoles":
        """Read the lists named by the ``peptides:`` config section (paths to text files)."""
        lists = {key: tuple(read_peptide_list(peptides_cfg[key])) for key in LISTS}
        for first, second in itertools.combinations(LISTS, 2):
            shared = sorted(set(lists[first]) & set(lists[second]))
            if shared:
                raise ValueError(
                    f"peptides {', '.join(shared)} are in both the {first} list "
                    f"({peptides_cfg[first]}) and the {second} list ({peptides_cfg[second]}); "
                    "each id may be in one list only"
                )
        if not lists["train"]:
            raise ValueError(f"the train list {peptides_cfg['train']} names no peptide; the model needs at least one "
                             "training peptide (one-letter ids, one per line)")
        evaluate_train = tuple(validate_sequence(p) for p in peptides_cfg.get("evaluate_train", ()))
        for peptide in evaluate_train:
            if peptide not in lists["train"] and peptide not in lists["val"]:
                raise ValueError(
                    f"peptides.evaluate_train lists {peptide!r}, which is in neither the train list "
                    f"({peptides_cfg['train']}) nor the val list ({peptides_cfg['val']})"
                )
        return cls(**lists, evaluate_train=evaluate_train)

    @property
    def evaluated(self) -> list[str]:
        """Every peptide the workflow evaluates: the test list, then ``evaluate_train``."""
        return list(self.test) + [p for p in self.evaluate_train if p not in self.test]

    def is_training(self, peptide: str) -> bool:
        """True for ids in the train or val list (they are not held out)."""
        return peptide in self.train or peptide in self.val

    def role(self, peptide: str) -> str:
        """``"train"`` for ids in the train or val list, ``"test"`` (held out) for every other id: the
        one role vocabulary of MD lengths (``md.length_ns``), metrics and the report."""
        return "train" if self.is_training(peptide) else "test"


def all_dipeptides() -> list[str]:
    """All 400 ordered pairs of the 20 standard amino acids, sorted."""
    return sorted(a + b for a, b in itertools.product(RESIDUES, repeat=2))


def paper_split(
    test: list[str], *, n_train: int = 200, n_val: int = 80, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Seeded train/val split of the dipeptides not in ``test`` (docs/design.md §3).

    Timewarp's own train/val split is not public in a form we can ship, so the 300 non-test
    pairs are shuffled with ``random.Random(seed)``; the first ``n_train`` train, the next
    ``n_val`` validate, the rest are unused. The committed files in ``config/peptides`` are this
    function's output, which a test checks.
    """
    held_out = set(test)
    candidates = [p for p in all_dipeptides() if p not in held_out]
    if n_train + n_val > len(candidates):
        raise ValueError(
            f"n_train + n_val = {n_train + n_val} exceeds the {len(candidates)} non-test pairs"
        )
    random.Random(seed).shuffle(candidates)
    return sorted(candidates[:n_train]), sorted(candidates[n_train : n_train + n_val])
