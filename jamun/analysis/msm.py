"""Markov state model of the reference MD: TICA → k-means → reversible MSM → PCCA+ (deeptime).

Fitted on reference MD only; other ensembles (JAMUN samples, replicate prefixes) are projected
with the MD's TICA, assigned to the MD's cluster centres and mapped to macrostates, so their
macrostate fractions can be compared with the MD's stationary populations. Walk-jump samples have
no kinetics, so no MSM is ever fitted to them.

References: Pérez-Hernández et al. 2013 (TICA, J. Chem. Phys. 139:015102); Prinz et al. 2011
(MSM estimation and implied timescales, J. Chem. Phys. 134:174105); Röblitz & Weber 2013 (PCCA+,
Adv. Data Anal. Classif. 7:147).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from deeptime.clustering import KMeansModel
    from deeptime.decomposition import CovarianceKoopmanModel
    from deeptime.markov.msm import MarkovStateModel
    from deeptime.util.validation import ImpliedTimescales

UNASSIGNED = -1
# Lag multipliers for the implied-timescale scan around the model lag.
ITS_LAG_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
MAX_ITS = 5


@dataclass(frozen=True)
class MSMFit:
    """A fitted reference MSM and everything needed to assign new frames to its macrostates.

    tica, kmeans: deeptime models (project features; nearest cluster centre).
    msm: reversible MSM on the largest connected set of clusters, lag `lag_frames`.
    macrostate_of_cluster: (n_clusters,) int64 crisp macrostate (largest PCCA+ membership) of
        each cluster, UNASSIGNED (-1) for clusters outside the connected set.
    stationary: (n_macrostates,) MD stationary population of each crisp macrostate.
    its: implied timescales (frames) at the lags in `its.lagtimes` (frames); None when every
        model has a single connected state (no process to time).
    notes: why fewer macrostates or clusters than requested were used, if so.
    """

    tica: CovarianceKoopmanModel
    kmeans: KMeansModel
    msm: MarkovStateModel
    macrostate_of_cluster: np.ndarray
    stationary: np.ndarray
    lag_frames: int
    macrostates_requested: int
    its: ImpliedTimescales | None
    notes: list[str] = field(default_factory=list)

    @property
    def n_macrostates(self) -> int:
        return int(self.stationary.size)

    @property
    def timescales_frames(self) -> np.ndarray:
        """The slowest (up to MAX_ITS) implied timescales (frames) of `msm` at its lag."""
        return self.msm.timescales(min(MAX_ITS, self.msm.n_states - 1))

    def its_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Implied-timescale scan: lags (n_lags,) frames and timescales (n_lags, n_processes)
        frames; no columns when no model has a second state."""
        if self.its is None:
            return np.array([self.lag_frames]), np.zeros((1, 0))
        timescales = [self.its.timescales_for_process(k) for k in range(self.its.max_n_processes)]
        return np.asarray(self.its.lagtimes), np.stack(timescales, axis=1)

    def project(self, features: np.ndarray) -> np.ndarray:
        """TICA coordinates (n_frames, tica_dim) of features (n_frames, n_features)."""
        return self.tica.transform(np.asarray(features, dtype=np.float64))

    def assign(self, features: np.ndarray) -> np.ndarray:
        """Macrostate (n_frames,) int64 of each frame; UNASSIGNED outside the connected set."""
        clusters = self.kmeans.transform(self.project(features))
        return self.macrostate_of_cluster[clusters]


def _msm(dtraj: np.ndarray, lag: int) -> MarkovStateModel:
    """Reversible maximum-likelihood MSM on the largest connected set at `lag` frames."""
    from deeptime.markov import TransitionCountEstimator
    from deeptime.markov.msm import MaximumLikelihoodMSM

    counts = TransitionCountEstimator(lagtime=lag, count_mode="sliding").fit(dtraj).fetch_model()
    try:
        return MaximumLikelihoodMSM(reversible=True).fit(counts.submodel_largest()).fetch_model()
    except ValueError as err:
        raise ValueError(f"no reversible MSM at lag {lag} frames from {len(dtraj)} reference "
                         f"frames in {counts.n_states_full} clusters ({err}); use fewer clusters, "
                         "a shorter lag or a longer reference MD") from err


def _supported_macrostates(msm: MarkovStateModel, requested: int) -> tuple[int, str | None]:
    """Macrostates the model can support: 1 + processes slower than the lag (|λ| > 1/e).

    A process is resolved at lag τ only when its implied timescale exceeds τ (Prinz et al. 2011);
    PCCA+ splits along resolved processes, so more sets than that carve noise.
    """
    eigenvalues = msm.eigenvalues(min(requested, msm.n_states))
    resolved = int(np.sum(np.abs(eigenvalues[1:]) > np.exp(-1.0)))
    supported = min(requested, msm.n_states, 1 + resolved)
    if supported == requested:
        return supported, None
    return supported, (f"PCCA+ reduced from {requested} to {supported} macrostates: the MSM has "
                       f"{msm.n_states} connected states and {resolved} processes slower than "
                       f"its lag ({msm.lagtime} frames)")


def _its_lags(lag: int, n_frames: int) -> list[int]:
    """Lags (frames) for the implied-timescale scan; each leaves at least half the data."""
    lags = {max(1, int(round(lag * f))) for f in ITS_LAG_FACTORS}
    return sorted(x for x in lags if x < n_frames // 2) or [lag]


def fit_msm(features: np.ndarray, *, lag_frames: int, tica_dim: int, clusters: int,
            macrostates: int, seed: int = 0) -> MSMFit:
    """Fit TICA → k-means → reversible MSM → PCCA+ on one reference trajectory.

    Parameters
    ----------
    features: (n_frames, n_features) time series, e.g. cos/sin of backbone dihedrals.
    lag_frames: TICA and MSM lag in frames (≥ 1, < n_frames / 2).
    tica_dim: TICs kept (capped at n_features). clusters: k-means centres (capped at n_frames).
    macrostates: requested PCCA+ sets; reduced with a RuntimeWarning when unsupported.
    seed: k-means++ seed.
    """
    # deeptime imports torch when it is installed (seconds), so only fitting pays for it.
    from deeptime.clustering import KMeans
    from deeptime.decomposition import TICA
    from deeptime.util.validation import implied_timescales

    features = np.asarray(features, dtype=np.float64)
    n_frames = features.shape[0]
    if lag_frames < 1 or 2 * lag_frames >= n_frames:
        raise ValueError(f"lag_frames={lag_frames} must be ≥ 1 and below half the trajectory "
                         f"({n_frames} frames)")
    if min(tica_dim, clusters, macrostates) < 1:
        raise ValueError(f"tica_dim ({tica_dim}), clusters ({clusters}) and macrostates "
                         f"({macrostates}) must be ≥ 1")
    notes = []
    if clusters > n_frames:
        notes.append(f"k-means reduced from {clusters} to {n_frames} clusters (one per frame)")
        clusters = n_frames
    tica_dim = min(tica_dim, features.shape[1])
    tica = TICA(lagtime=lag_frames, dim=tica_dim).fit(features).fetch_model()
    projected = tica.transform(features)
    kmeans = KMeans(n_clusters=clusters, init_strategy="kmeans++", fixed_seed=seed,
                    n_jobs=1).fit(projected).fetch_model()
    dtraj = kmeans.transform(projected)

    msm = _msm(dtraj, lag_frames)
    n_macro, note = _supported_macrostates(msm, macrostates)
    if note:
        notes.append(note)
    if n_macro > 1:
        crisp = np.argmax(msm.pcca(n_macro).memberships, axis=1)
    else:
        crisp = np.zeros(msm.n_states, dtype=np.int64)
    macrostate_of_cluster = np.full(clusters, UNASSIGNED, dtype=np.int64)
    macrostate_of_cluster[msm.count_model.state_symbols] = crisp
    stationary = np.bincount(crisp, weights=msm.stationary_distribution, minlength=n_macro)

    its_models = [_msm(dtraj, lag) for lag in _its_lags(lag_frames, n_frames)]
    n_its = min(MAX_ITS, min(m.n_states for m in its_models) - 1)
    its = implied_timescales(its_models, n_its=n_its) if n_its >= 1 else None
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return MSMFit(tica=tica, kmeans=kmeans, msm=msm, macrostate_of_cluster=macrostate_of_cluster,
                  stationary=stationary, lag_frames=lag_frames, macrostates_requested=macrostates,
                  its=its, notes=notes)


def macrostate_fractions(labels: np.ndarray, n_macrostates: int) -> tuple[np.ndarray, float]:
    """Fractions (n_macrostates,) of assigned frames per macrostate, and the unassigned fraction.

    Fractions are NaN when no frame is assigned.
    """
    labels = np.asarray(labels)
    assigned = labels[labels != UNASSIGNED]
    counts = np.bincount(assigned, minlength=n_macrostates).astype(np.float64)
    fractions = counts / counts.sum() if assigned.size else np.full(n_macrostates, np.nan)
    return fractions, float(1.0 - assigned.size / max(labels.size, 1))
