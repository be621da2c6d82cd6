"""Walk-jump sampling of peptides from their sequence alone (docs/design.md §6).

Per peptide the input is the minimized built structure ``system.pdb`` (or frames of a given
trajectory) and a trained denoiser; no MD of the target is used. ``chains`` copies of each
peptide's heavy-atom graph run as one batch (several peptides may share the batch), and the jumps
are streamed to ``samples.xtc`` in step-major order: frame k is saved step k // chains of chain
k % chains, so any prefix of the file holds all chains at equal length.

Everything is written into ``out_dir/.work/`` and moved into ``out_dir`` with ``os.replace`` only
after the whole walk succeeded, so a failed run leaves no declared output (``samples.xtc``,
``topology.pdb``, ``sample.json``) behind; its partial samples stay in ``.work/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import mdtraj
import numpy as np
import torch
from mdtraj.formats import XTCTrajectoryFile
from torch import Tensor
from tqdm import tqdm

import jamun.model
from jamun.data.graph import TopologyFeatures, batch_graphs, topology_features
from jamun.lock import owned
from jamun.model.pretrained import file_sha256, resolve_model
from jamun.provenance import package_versions
from jamun.sampling.baoab import BAOAB, NonFiniteChainError
from jamun.schema import section_settings
from jamun.sequence import residue_label, validate_sequence

OUTPUTS = ("samples.xtc", "topology.pdb", "sample.json")
WORK_DIR = ".work"


@dataclass(frozen=True)
class SampleSettings:
    """The ``sample:`` config section (keys and defaults in workflow/schemas/config.schema.yaml,
    described in config/README.md).

    chains: walkers per peptide. steps: BAOAB steps per chain. burn_in: steps before the first
    saved jump. save_every: save a jump every this many steps after burn-in. friction_per_step:
    γ·dt. mass: M. dt: step size, None = σ. score_clip_sigmas: cap on each atom's |xhat − y| in units
    of σ, i.e. on its score norm at score_clip_sigmas / σ nm⁻¹ (None: off); in σ units so that
    clipping stays rare at any noise level. seed: seeds the initial noise, initial velocities and
    O-step noise. device: "auto" (cuda if available, else cpu) or a torch device string.
    sigma_nm: noise level of the walk (nm), None = the model's sigma. jump_sigma_nm: noise level of
    the saved jumps (nm, at most the walk's), None = the walk's (see :func:`walk_jump_peptides`).
    Both must be levels the model was trained at (:meth:`noise_levels`).
    """

    chains: int
    steps: int
    burn_in: int
    save_every: int
    friction_per_step: float
    mass: float
    dt: float | None
    score_clip_sigmas: float | None
    seed: int
    device: str
    sigma_nm: float | None
    jump_sigma_nm: float | None

    def __post_init__(self) -> None:
        if self.samples_per_chain < 1:
            raise ValueError(
                f"sample.steps ({self.steps}) - sample.burn_in ({self.burn_in}) must be >= sample.save_every "
                f"({self.save_every}) so that each chain saves at least one jump"
            )
        if self.sigma_nm is not None and self.jump_sigma_nm is not None and self.jump_sigma_nm > self.sigma_nm:
            raise ValueError(f"sample.jump_sigma_nm = {self.jump_sigma_nm} must not exceed sample.sigma_nm = "
                             f"{self.sigma_nm} (the jump denoises at a sharper level than the walk)")

    def noise_levels(self, denoiser: torch.nn.Module) -> tuple[float, float]:
        """(walk, jump) noise levels in nm for ``denoiser``: ``sigma_nm`` and ``jump_sigma_nm`` with
        None resolved (the model's sigma; the walk's level). One-line ValueError naming the key, the
        value and the model's levels for a level outside its trained range
        (:meth:`jamun.model.Denoiser.check_sigma`), or a jump level above the walk's."""
        walk = float(denoiser.sigma) if self.sigma_nm is None else denoiser.check_sigma(self.sigma_nm, "sample.sigma_nm")
        if self.jump_sigma_nm is None:
            return walk, walk
        jump = denoiser.check_sigma(self.jump_sigma_nm, "sample.jump_sigma_nm")
        if jump > walk:
            raise ValueError(f"sample.jump_sigma_nm = {jump} must not exceed the walk's noise level {walk} nm "
                             f"(sample.sigma_nm = {self.sigma_nm})")
        return walk, jump

    @classmethod
    def from_config(cls, sample_cfg: Mapping | None, source: str = "config") -> "SampleSettings":
        """Settings from the ``sample:`` config dict; missing keys take the schema's defaults.

        ValueError (one line, naming ``source`` and the key) for an unknown key or a bad value.
        """
        settings = section_settings("sample", sample_cfg, source)
        try:
            return cls(**settings)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    @property
    def samples_per_chain(self) -> int:
        """Jumps saved per chain, (steps − burn_in) // save_every."""
        return (self.steps - self.burn_in) // self.save_every

    def integrator(self, sigma: float) -> BAOAB:
        """The BAOAB integrator of a walk at noise level ``sigma`` (nm; the walk's level of
        :meth:`noise_levels`)."""
        return BAOAB(sigma=sigma, dt=self.dt, friction_per_step=self.friction_per_step,
                     mass=self.mass,
                     score_clip=None if self.score_clip_sigmas is None else self.score_clip_sigmas / sigma)


def initial_positions(x0: Tensor, chains: int, sigma: float, generator: torch.Generator) -> Tensor:
    """Noisy starting points y0 = x + σ η of ``chains`` walkers, (chains, n_atoms, 3) nm.

    x0: (n_atoms, 3) one clean structure shared by all chains, or (n_frames, n_atoms, 3) frames
    spread evenly over the chains (frame i·(n_frames − 1)/(chains − 1), rounded; repeated when
    there are fewer frames than chains).
    """
    if x0.ndim == 2:
        x = x0.expand(chains, *x0.shape)
    elif x0.ndim == 3 and x0.shape[0] >= 1:
        index = torch.from_numpy(np.rint(np.linspace(0, x0.shape[0] - 1, chains)).astype(np.int64))
        x = x0[index.to(x0.device)]
    else:
        raise ValueError(f"initial structure must be (n_atoms, 3) or (n_frames, n_atoms, 3), got {tuple(x0.shape)}")
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + sigma * noise


def walk_jump_peptides(
    denoiser: torch.nn.Module,
    systems: Sequence[tuple[TopologyFeatures, Tensor]],
    settings: SampleSettings,
    *,
    sequences: Sequence[str] | None = None,
) -> Iterator[tuple[int, list[Tensor]]]:
    """Walk ``settings.chains`` chains of every peptide in one batch and yield the saved jumps.

    Parameters
    ----------
    denoiser: provides ``sigma`` (nm) and ``xhat(y, graph)``; its device is used.
    systems: per peptide its heavy-atom features and clean start x0, (n_atoms, 3) or
        (n_frames, n_atoms, 3) nm, aligned with ``features`` (see ``initial_positions``).
    settings: chains, steps, integrator settings and seed.
    sequences: names for error messages; default "peptide 0", "peptide 1", ...

    The walk runs at sigma_w = ``settings.sigma_nm`` (None: the model's sigma) with the score
    (xhat_w(y) - y) / sigma_w^2. With ``settings.jump_sigma_nm`` = sigma_j < sigma_w each saved jump
    is a deterministic step from level sigma_w to sigma_j, then a denoising there:
    y' = xhat_w(y) + (sigma_j / sigma_w) (y - xhat_w(y)), jump = xhat_j(y') -- the DDIM update with
    no fresh noise (Song, Meng & Ermon 2021, eq. 12 with sigma_t = 0, in the variance-exploding
    form x + sigma eta: the predicted noise (y - xhat_w) / sigma_w is kept and rescaled to sigma_j).
    It costs one more denoiser pass per saved jump; without it each step is one pass.

    Yields
    ------
    (step, jumps): the walk step (1-based) and per peptide its jumps xhat(y) (or xhat_j(y')),
    (chains, n_atoms, 3) nm on the denoiser's device, in chain order.

    Raises
    ------
    NonFiniteChainError
        Naming the peptide, its chain (0-based) and the first non-finite step.
    """
    names = list(sequences) if sequences is not None else [f"peptide {i}" for i in range(len(systems))]
    device = next(denoiser.parameters()).device
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    chains = settings.chains
    sigma, jump_sigma = settings.noise_levels(denoiser)
    # Graph ids run peptide-major: graph g is chain g % chains of peptide g // chains.
    graph = batch_graphs([features for features, _ in systems for _ in range(chains)]).to(device)
    y0 = torch.cat([
        initial_positions(x0.to(device=device, dtype=torch.float32), chains, sigma, generator).reshape(-1, 3)
        for _, x0 in systems
    ])
    sizes = [chains * len(features.heavy_atom_indices) for features, _ in systems]

    def denoise(y: Tensor) -> Tensor:
        if settings.sigma_nm is None:  # the model's own level: exactly the one-level call
            return denoiser.xhat(y, graph)
        return denoiser.xhat(y, graph, sigma=sigma)

    def sharper_jump(y: Tensor, xhat: Tensor) -> Tensor:
        """The DDIM step from sigma to jump_sigma, then xhat there."""
        return denoiser.xhat(xhat + (jump_sigma / sigma) * (y - xhat), graph, sigma=jump_sigma)

    walk = settings.integrator(sigma).walk(
        denoise, y0, steps=settings.steps, burn_in=settings.burn_in, save_every=settings.save_every,
        generator=generator, chain_of_row=graph.batch, jump=None if jump_sigma == sigma else sharper_jump,
    )
    try:
        for jump in walk:
            yield jump.step, [part.reshape(chains, -1, 3) for part in torch.split(jump.xhat, sizes)]
    except NonFiniteChainError as error:
        peptide, chain = divmod(error.chain, chains)
        raise NonFiniteChainError(
            chain, error.step, f"{names[peptide]}: chain {chain} became non-finite or diverged at walk step "
                               f"{error.step}; a smaller sample.dt (now {settings.dt or 'sigma'}) or a score clip "
                               f"(sample.score_clip_sigmas, now {settings.score_clip_sigmas}) keeps chains stable"
        ) from None


@dataclass(frozen=True)
class SampleTarget:
    """One peptide to sample: sequence, its built ``system.pdb``, the output folder and,
    optionally, an XTC whose frames (all atoms of system.pdb, or its heavy atoms) start the chains
    instead of the minimized structure."""

    sequence: str
    system_pdb: Path
    out_dir: Path
    init_trajectory: Path | None = None


def _load_system(target: SampleTarget) -> tuple[mdtraj.Trajectory, TopologyFeatures, Tensor]:
    """system.pdb, its heavy-atom features and the clean start positions (nm) of the chains."""
    sequence = validate_sequence(target.sequence)
    if not Path(target.system_pdb).is_file():
        raise FileNotFoundError(f"system.pdb {target.system_pdb} for peptide {sequence} does not exist")
    system = mdtraj.load(str(target.system_pdb))
    features = topology_features(system.topology)
    if features.sequence != sequence:
        raise ValueError(
            f"{target.system_pdb} holds peptide {features.sequence!r}, not the requested {sequence!r}"
        )
    heavy = features.heavy_atom_indices
    if target.init_trajectory is None:
        return system, features, torch.from_numpy(system.xyz[0, heavy])
    return system, features, torch.from_numpy(_read_frames(Path(target.init_trajectory), system.n_atoms, heavy))


def _read_frames(path: Path, n_atoms: int, heavy: np.ndarray) -> np.ndarray:
    """Heavy-atom positions (n_frames, n_heavy, 3) nm from an XTC of all atoms or heavy atoms."""
    if path.suffix != ".xtc":
        raise ValueError(f"initial frames {path} must be an .xtc file (valid suffix: .xtc)")
    if not path.is_file():
        raise FileNotFoundError(f"initial frames {path} do not exist")
    with XTCTrajectoryFile(str(path)) as xtc:
        xyz = xtc.read()[0]
    if xyz.shape[0] == 0:
        raise ValueError(f"initial frames {path} hold no frames")
    if xyz.shape[1] == n_atoms:
        return np.ascontiguousarray(xyz[:, heavy])
    if xyz.shape[1] == len(heavy):
        return xyz
    raise ValueError(
        f"initial frames {path} have {xyz.shape[1]} atoms; expected {n_atoms} (all atoms of "
        f"system.pdb) or {len(heavy)} (its heavy atoms)"
    )


def _resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; otherwise any torch device string."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from error




def sample_peptides(
    targets: Sequence[SampleTarget],
    model_path: Path | str,
    *,
    progress: bool = True,
    **sample_cfg: Any,
) -> list[dict[str, Any]]:
    """Sample several peptides in one batch; write each one's outputs; return their sample.json.

    Parameters
    ----------
    targets: peptides to sample with their system.pdb and output folder (distinct folders).
    model_path: a checkpoint written by ``jamun.model.save``, or a shipped model's name
        (``pretrained`` = the default one; see ``jamun.model.resolve_model``).
    progress: show a tqdm bar (samples/s) on stderr.
    **sample_cfg: the ``sample:`` config keys (``SampleSettings``), ``device`` among them; missing
        keys take the schema's defaults.

    Writes per target ``out_dir/{samples.xtc, topology.pdb, sample.json}`` (heavy atoms only),
    all three only after every chain finished. ``wall_seconds`` covers the walk and the writing,
    not model loading; for several targets it is the shared batch's time.

    Raises
    ------
    NonFiniteChainError
        Naming peptide, chain and step, and where the partial samples were kept.
    """
    settings = SampleSettings.from_config(sample_cfg)
    targets = [dataclasses.replace(t, sequence=validate_sequence(t.sequence), out_dir=Path(t.out_dir)) for t in targets]
    if not targets:
        raise ValueError("sample_peptides needs at least one target")
    if len({t.out_dir.resolve() for t in targets}) != len(targets):
        raise ValueError(f"sample targets must have distinct out_dir, got {[str(t.out_dir) for t in targets]}")
    model_file = resolve_model(model_path)
    torch_device = _resolve_device(settings.device)
    denoiser = jamun.model.load(model_file, map_location=torch_device).eval()
    try:
        settings.noise_levels(denoiser)  # before any output is touched
    except ValueError as error:
        raise ValueError(f"{model_file}: {error}") from None
    model_sha256 = file_sha256(model_file)
    loaded = [_load_system(t) for t in targets]

    work_dirs = [t.out_dir / WORK_DIR for t in targets]
    with contextlib.ExitStack() as owners:  # one sampler per output folder at a time
        for work in work_dirs:
            owners.enter_context(owned(work))
        return _sample_owned(targets, work_dirs, loaded, denoiser, settings, model_path, model_file,
                             model_sha256, torch_device, progress)


def _sample_owned(targets: list[SampleTarget], work_dirs: list[Path], loaded: list, denoiser: torch.nn.Module,
                  settings: SampleSettings, model_path: Path | str, model_file: Path, model_sha256: str,
                  torch_device: torch.device, progress: bool) -> list[dict[str, Any]]:
    """:func:`sample_peptides` once this process owns every target's work folder."""
    for target, work, (system, features, _) in zip(targets, work_dirs, loaded):
        work.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:  # a failed rerun must not leave an older run's outputs looking current
            (target.out_dir / name).unlink(missing_ok=True)
            (work / name).unlink(missing_ok=True)
        system.atom_slice(features.heavy_atom_indices).save_pdb(str(work / "topology.pdb"))

    chains = settings.chains
    total = len(targets) * chains * settings.samples_per_chain
    start = time.perf_counter()
    with contextlib.ExitStack() as stack, torch.no_grad():
        writers = [stack.enter_context(XTCTrajectoryFile(str(w / "samples.xtc"), "w")) for w in work_dirs]
        bar = stack.enter_context(tqdm(total=total, unit="sample", unit_scale=True, file=sys.stderr,
                                       disable=not progress, desc="walk-jump"))
        frames_written = 0
        try:
            for step, jumps in walk_jump_peptides(denoiser, [(f, x0) for _, f, x0 in loaded], settings,
                                                  sequences=[t.sequence for t in targets]):
                for writer, xyz in zip(writers, jumps):
                    writer.write(xyz.float().cpu().numpy(),
                                 time=np.full(chains, step, dtype=np.float32),
                                 step=np.full(chains, step, dtype=np.int32),
                                 box=np.zeros((chains, 3, 3), dtype=np.float32))
                frames_written += chains
                bar.update(len(targets) * chains)
        except NonFiniteChainError as error:
            where = ", ".join(str(w / "samples.xtc") for w in work_dirs)
            raise NonFiniteChainError(
                error.chain, error.step,
                f"{error}; sampling stopped, {frames_written} frames per peptide kept in {where} "
                f"(no outputs were declared)",
            ) from None
    wall = time.perf_counter() - start

    walk_sigma, jump_sigma = settings.noise_levels(denoiser)
    integrator = settings.integrator(walk_sigma)
    n_samples = chains * settings.samples_per_chain
    results = []
    for target, work, (_, features, _) in zip(targets, work_dirs, loaded):
        info = {
            "sequence": target.sequence,
            "residues": residue_label(target.sequence),
            "model": str(model_path),
            "model_file": str(model_file),
            "model_sha256": model_sha256,
            "system_pdb": str(target.system_pdb),
            "init": "minimized system.pdb" if target.init_trajectory is None else str(target.init_trajectory),
            "n_atoms": int(len(features.heavy_atom_indices)),
            "sigma_nm": float(denoiser.sigma),
            "sigma_range_nm": None if denoiser.sigma_range is None else list(denoiser.sigma_range),
            "walk_sigma_nm": walk_sigma,
            "jump_sigma_nm": jump_sigma,
            "dt": integrator.dt,
            "friction_per_step": integrator.friction_per_step,
            "gamma": integrator.gamma,
            "mass": integrator.mass,
            "score_clip_sigmas": settings.score_clip_sigmas,
            "score_clip": integrator.score_clip,
            "chains": chains,
            "steps": settings.steps,
            "burn_in": settings.burn_in,
            "save_every": settings.save_every,
            "samples_per_chain": settings.samples_per_chain,
            "n_samples": n_samples,
            "frame_order": "step-major: frame k is saved step k // chains of chain k % chains; xtc time = walk step",
            "batch_peptides": [t.sequence for t in targets],
            "wall_seconds": wall,
            "samples_per_second": n_samples / wall,
            "device": str(torch_device),
            "device_name": torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else "cpu",
            "versions": package_versions(("jamun", "torch", "e3nn")),
            "seed": settings.seed,
        }
        (work / "sample.json").write_text(json.dumps(info, indent=2) + "\n")
        for name in OUTPUTS:  # sample.json last: its presence marks a complete run
            os.replace(work / name, target.out_dir / name)
        with contextlib.suppress(OSError):  # keep .work only if something else lives there
            work.rmdir()
        results.append(info)
    return results


def sample_peptide(
    sequence: str,
    system_pdb: Path | str,
    model_path: Path | str,
    out_dir: Path | str,
    *,
    init_trajectory: Path | str | None = None,
    progress: bool = True,
    **sample_cfg: Any,
) -> dict[str, Any]:
    """Sample one peptide; see ``sample_peptides``. Returns the sample.json content."""
    target = SampleTarget(sequence, Path(system_pdb), Path(out_dir),
                          None if init_trajectory is None else Path(init_trajectory))
    return sample_peptides([target], model_path, progress=progress, **sample_cfg)[0]
