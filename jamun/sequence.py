"""Peptide sequences: the one-letter residue table and the checks every stage applies to a sequence.

Kept apart from the peptide builder (jamun/peptides.py), which needs OpenMM and pdbfixer, so that
sampling, training and evaluation import neither.
"""

from __future__ import annotations

RESIDUES: dict[str, str] = {
    "A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS",
    "I": "ILE", "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN",
    "R": "ARG", "S": "SER", "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR",
}
# Three-letter code -> one-letter code, ordered by three-letter code: this order is the residue-type
# vocabulary of the denoiser's input features (jamun/data/graph.py), which trained models depend on.
THREE_TO_ONE: dict[str, str] = {three: one for one, three in sorted(RESIDUES.items(), key=lambda item: item[1])}
MIN_LENGTH, MAX_LENGTH = 1, 8


def validate_sequence(sequence: str) -> str:
    """Return `sequence` upper-cased after checking it is 1-8 standard one-letter residues.

    Raises
    ------
    ValueError
        Naming the input, the valid letters and the valid length range.
    """
    if not isinstance(sequence, str):
        raise ValueError(f"peptide sequence must be a string, got {sequence!r}")
    seq = sequence.strip().upper()
    valid = "".join(sorted(RESIDUES))
    if not MIN_LENGTH <= len(seq) <= MAX_LENGTH:
        raise ValueError(
            f"peptide sequence {sequence!r} has {len(seq)} residues; valid lengths are "
            f"{MIN_LENGTH}..{MAX_LENGTH} one-letter codes from {valid}"
        )
    bad = sorted({c for c in seq if c not in RESIDUES})
    if bad:
        raise ValueError(
            f"peptide sequence {sequence!r} contains unknown residue letter(s) {''.join(bad)!r}; "
            f"valid letters are {valid}"
        )
    return seq


def residue_label(sequence: str) -> str:
    """Three-letter label of a sequence, e.g. "GN" -> "GLY-ASN"."""
    return "-".join(RESIDUES[c] for c in validate_sequence(sequence))
