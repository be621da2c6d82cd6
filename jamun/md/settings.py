"""MD protocol settings: the `md:` config section as a frozen dataclass, with the checks that
relate two keys (docs/design.md §3).

Each key alone is checked against the schema by `jamun.schema.section_settings`, which also fills
the defaults; this module adds what no single key can say (interval multiples, keys that depend on
the protocol). It imports no MD engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from jamun.schema import section_settings

# The box edge must stay above 2 x cutoff under NPT; padding >= 1.1 x cutoff makes the initial
# edge >= 2.2 x cutoff (OpenMM sets edge = max(solute diameter + padding, 2 x padding)).
MIN_PADDING_OVER_CUTOFF = 1.1
# Settings that live under `md.explicit` in the config.
EXPLICIT_KEYS = ("padding_nm", "cutoff_nm", "pressure_bar", "ionic_strength_molar")


@dataclass(frozen=True)
class MDSettings:
    """MD protocol settings (the `md:` config section; keys and defaults in
    workflow/schemas/config.schema.yaml, described in config/README.md).

    Times in ps (timestep in fs), temperature K, friction 1/ps, restraint_k kJ/mol/nm^2,
    lengths nm, pressure bar, ionic strength mol/L. Build it with :meth:`from_config`, which
    checks every key against the schema; ``__post_init__`` checks what relates two keys.
    """

    protocol: str
    platform: str
    temperature_k: float
    friction_per_ps: float
    timestep_fs: float
    hydrogen_mass_amu: float | None
    save_every_ps: float
    checkpoint_every_ps: float
    restraint_k: float
    nvt_ps: float
    npt_ps: float
    padding_nm: float
    cutoff_nm: float
    pressure_bar: float
    ionic_strength_molar: float

    @classmethod
    def from_config(cls, md_cfg: Mapping | None, source: str = "config") -> MDSettings:
        """Settings from the `md:` config dict; missing keys take the schema's defaults.

        `length_ns` and `seed` are validated and ignored (they are arguments of `simulate`);
        the `explicit:` sub-dict maps onto padding_nm, cutoff_nm, pressure_bar and
        ionic_strength_molar.

        Raises
        ------
        ValueError
            One line naming ``source`` and the key (e.g. ``md.explicit.cutoff_nm``), the bad value
            and what is valid.
        """
        s = section_settings("md", md_cfg, source)
        flat = {**s, **s["explicit"]}
        try:
            return cls(**{f.name: flat[f.name] if f.name in ("protocol", "platform") or flat[f.name] is None
                          else float(flat[f.name]) for f in dataclasses.fields(cls)})
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def __post_init__(self) -> None:
        """Check what one key cannot say alone (interval multiples, protocol-dependent keys);
        ValueError names both keys."""
        whole_ratio("md.save_every_ps", self.save_every_ps, "md.timestep_fs", self.timestep_ps)
        whole_ratio("md.checkpoint_every_ps", self.checkpoint_every_ps, "md.save_every_ps", self.save_every_ps)
        for name in ("nvt_ps", "npt_ps"):
            whole_ratio(_config_key(name), getattr(self, name), "md.timestep_fs", self.timestep_ps)
        if self.protocol == "implicit" and self.npt_ps > 0:
            raise ValueError(f"md.npt_ps is {self.npt_ps} but md.protocol 'implicit' has no box; set it to 0")
        if self.protocol == "explicit" and self.padding_nm < MIN_PADDING_OVER_CUTOFF * self.cutoff_nm:
            raise ValueError(
                f"md.explicit.padding_nm = {self.padding_nm} is too small for md.explicit.cutoff_nm = "
                f"{self.cutoff_nm}: it must be >= {MIN_PADDING_OVER_CUTOFF} x cutoff so the box stays > 2 x "
                "cutoff under NPT")

    @property
    def timestep_ps(self) -> float:
        return self.timestep_fs / 1000.0

    def steps(self, ps: float) -> int:
        """Number of integrator steps in `ps` picoseconds."""
        return int(round(ps / self.timestep_ps))


def _config_key(name: str) -> str:
    """Where setting `name` lives in the config, e.g. "md.explicit.cutoff_nm"."""
    return f"md.explicit.{name}" if name in EXPLICIT_KEYS else f"md.{name}"


def whole_ratio(name: str, value: float, unit_name: str, unit_value: float, *, shown: str | None = None) -> int:
    """value / unit_value as an int; ValueError naming `name` if it is not a whole number.

    shown: how the message states the value (default ``f"{value} ps"``), e.g. in the user's unit.
    """
    ratio = value / unit_value
    if abs(ratio - round(ratio)) > 1e-6 * max(1.0, ratio):
        raise ValueError(f"{name} = {shown or f'{value:g} ps'} must be a whole multiple of {unit_name} ({unit_value:g} ps)")
    return int(round(ratio))
