"""Paired racing: keep a revision only when its per-seed gain over the incumbent is real.

Both loops use it (Loop 1 for structures, Loop 2 for adapters); it knows
nothing of either. An *arm* is one version (the incumbent or a candidate);
a *unit* is one paired comparison cell (`"<task>/<seed>"`): every arm plays
the same units with the same sampling seeds, so a unit's gain
`score(candidate) - score(incumbent)` cancels the seed's own difficulty.

`race(candidates, play, config)` runs one round:

1. Stages of fresh seed blocks (`config.stages`). After each stage, a
   candidate is dropped when it is clearly worse than the incumbent or than
   the best live candidate (one-sided upper bound of the gain below 0 at
   `drop_alpha`).
2. After the last stage, the live candidate with the largest mean gain is
   the survivor. It passes when the one-sided paired-bootstrap lower bound
   of its mean gain over all raced units is above 0 at `level / K`
   (Bonferroni over the K candidates that entered), or for binary outcomes
   when the exact sign test on discordant pairs has p <= `level / K`.
3. A survivor that passes plays a block of fresh seeds it was not raced on
   (`confirm_seeds`), with the incumbent; it is accepted only when its mean
   gain there is positive.

`play(arms, block)` is the caller's: it plays (or finds already played)
the block's seeds for each arm and returns `{arm: {unit: score}}`. A block
says whether it is a race stage or the confirmation, so a caller can screen
on capped episodes with a dense metric and confirm on full ones (NetHack).
Because `race` is a pure function of what `play` returns, re-running it
after a crash with a `play` that finds finished episodes on disk resumes it.

The statistics (`bootstrap_bound`, `sign_test_p`, `paired_gains`,
`paired_summary`) are usable on their own. `simulate` races synthetic arms
(per-episode noise, a true effect) to measure the false-accept rate and the
power of a configuration; `simulate_greedy` does the same for the authors'
rule (accept a 10-episode mean above a stored incumbent score).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats as scipy_stats

INCUMBENT = "incumbent"
Scores = Mapping[str, float]  # unit -> score
TestKind = Literal["bootstrap", "sign"]


@dataclasses.dataclass(frozen=True)
class RaceConfig:
  """Thresholds, stage sizes and the budget of one race.

  Attributes:
    stages: fresh seeds per race stage (each stage's block is new seeds).
    confirm_seeds: fresh seeds of the confirmation block (0 = no confirmation).
    level: one-sided level of the final test (bootstrap lower bound or sign
      test), split over the candidates that entered (Bonferroni); the
      procedure's false-accept rate is at most about this.
    drop_alpha: one-sided level of the early-drop test (upper bound < 0).
    test: "bootstrap" (continuous scores) or "sign" (binary outcomes).
    bootstrap_samples: resamples per bootstrap bound.
    seed: seed of the bootstrap resampling.
  """

  stages: tuple[int, ...] = (25, 25, 25, 25)
  confirm_seeds: int = 40
  level: float = 0.10
  drop_alpha: float = 0.05
  test: TestKind = "bootstrap"
  bootstrap_samples: int = 1000
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "stages", tuple(int(s) for s in self.stages))
    if not self.stages or any(s < 1 for s in self.stages):
      raise ValueError(f"stages must be positive seed counts, got {self.stages}")
    if self.confirm_seeds < 0:
      raise ValueError(f"confirm_seeds must be >= 0, got {self.confirm_seeds}")
    for name in ("level", "drop_alpha"):
      if not 0 < getattr(self, name) < 1:
        raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
    if self.test not in ("bootstrap", "sign"):
      raise ValueError(f"test must be 'bootstrap' or 'sign', got {self.test!r}")
    if self.bootstrap_samples < 100:
      raise ValueError(f"bootstrap_samples must be >= 100, got {self.bootstrap_samples}")

  @property
  def seeds_per_round(self) -> int:
    return sum(self.stages) + self.confirm_seeds


@dataclasses.dataclass(frozen=True)
class Block:
  """A block of fresh seeds: `size` seeds from index `offset` of the round's window."""

  name: str  # "stage1", "stage2", ..., "confirm"
  kind: Literal["race", "confirm"]
  offset: int
  size: int


def blocks(config: RaceConfig) -> list[Block]:
  """The round's seed blocks, race stages first, then the confirmation block."""
  out, offset = [], 0
  for i, size in enumerate(config.stages):
    out.append(Block(f"stage{i + 1}", "race", offset, size))
    offset += size
  if config.confirm_seeds:
    out.append(Block("confirm", "confirm", offset, config.confirm_seeds))
  return out


# --- statistics ---------------------------------------------------------------------------


def paired_gains(candidate: Scores, incumbent: Scores) -> np.ndarray:
  """Per-unit gains over the units both played, in sorted unit order."""
  units = sorted(set(candidate) & set(incumbent))
  return np.asarray([candidate[u] - incumbent[u] for u in units], dtype=np.float64)


def bootstrap_bound(gains: np.ndarray, alpha: float, *, upper: bool = False,
                    samples: int = 2000, seed: int = 0) -> float:
  """One-sided paired-bootstrap bound of the mean gain at level `alpha`.

  The lower bound is the `alpha` quantile of the resampled means (upper: the
  `1 - alpha` quantile). No unit gives -inf (+inf); one unit gives its gain.
  """
  gains = np.asarray(gains, dtype=np.float64)
  n = gains.size
  if n == 0:
    return math.inf if upper else -math.inf
  if n == 1 or np.all(gains == gains[0]):
    return float(gains[0])
  means = gains[_resample_index(n, samples, seed)].mean(axis=1)
  return float(np.quantile(means, 1 - alpha if upper else alpha))


@functools.lru_cache(maxsize=64)
def _resample_index(n: int, samples: int, seed: int) -> np.ndarray:
  """The bootstrap's resampling indices, [samples, n] (the same for the same n, samples, seed)."""
  idx = np.random.default_rng(seed).integers(0, n, size=(samples, n), dtype=np.int32)
  idx.flags.writeable = False
  return idx


def sign_test_p(gains: np.ndarray, *, worse: bool = False) -> float:
  """Exact one-sided sign test on the discordant pairs (ties dropped).

  The p-value of "the candidate wins more often than it loses" (`worse`:
  "loses more often than it wins"); 1.0 without discordant pairs.
  """
  gains = np.asarray(gains)
  wins, losses = int((gains > 0).sum()), int((gains < 0).sum())
  if worse:
    wins, losses = losses, wins
  n = wins + losses
  if n == 0:
    return 1.0
  return float(scipy_stats.binom.sf(wins - 1, n, 0.5))


def paired_summary(candidate: Scores, incumbent: Scores) -> dict[str, Any]:
  """n, mean gain with a 95% t interval, wins/losses/ties and both arms' means."""
  gains = paired_gains(candidate, incumbent)
  units = sorted(set(candidate) & set(incumbent))
  n = gains.size
  half = 0.0
  if n > 1:
    half = float(scipy_stats.t.ppf(0.975, n - 1) * gains.std(ddof=1) / math.sqrt(n))
  return {
      "n": int(n),
      "mean_gain": float(gains.mean()) if n else math.nan,
      "gain_ci95": half if n else math.nan,
      "wins": int((gains > 0).sum()), "losses": int((gains < 0).sum()),
      "ties": int((gains == 0).sum()),
      "candidate_mean": float(np.mean([candidate[u] for u in units])) if n else math.nan,
      "incumbent_mean": float(np.mean([incumbent[u] for u in units])) if n else math.nan,
  }


def _upper_below_zero(gains: np.ndarray, config: RaceConfig, seed: int) -> tuple[bool, float]:
  """Whether the candidate is clearly worse; the statistic that decided."""
  if config.test == "sign":
    p = sign_test_p(gains, worse=True)
    return p <= config.drop_alpha, p
  ub = bootstrap_bound(gains, config.drop_alpha, upper=True, samples=config.bootstrap_samples,
                       seed=seed)
  return ub < 0, ub


def final_test(gains: np.ndarray, alpha: float, config: RaceConfig) -> dict[str, Any]:
  """The survivor's test over all raced units: passed, statistic and its name."""
  if config.test == "sign":
    p = sign_test_p(gains)
    return {"test": "sign", "alpha": alpha, "p_value": p, "passed": bool(p <= alpha),
            "wins": int((gains > 0).sum()), "losses": int((gains < 0).sum())}
  lb = bootstrap_bound(gains, alpha, samples=config.bootstrap_samples, seed=config.seed)
  return {"test": "bootstrap", "alpha": alpha, "lower_bound": lb, "passed": bool(lb > 0),
          "mean_gain": float(gains.mean()) if gains.size else math.nan}


# --- the race -----------------------------------------------------------------------------


@dataclasses.dataclass
class RaceResult:
  """What a race decided and why.

  Attributes:
    accepted: the accepted candidate, or None.
    survivor: the candidate that reached the final test (None: all dropped).
    decision: "accepted" | "rejected_test" | "rejected_confirm" | "all_dropped".
    scores: arm -> unit -> score, every block (race and confirmation) played.
    dropped: candidate -> {"stage", "vs", "statistic"} for early drops.
    test: the survivor's final test (see `final_test`), or None.
    confirm: the confirmation block's paired summary, or None.
    summaries: candidate -> paired summary vs the incumbent over its raced units.
    episodes: episodes played (all arms, all blocks).
  """

  accepted: str | None
  survivor: str | None
  decision: str
  scores: dict[str, dict[str, float]]
  dropped: dict[str, dict[str, Any]]
  test: dict[str, Any] | None
  confirm: dict[str, Any] | None
  summaries: dict[str, dict[str, Any]]
  episodes: int

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


PlayFn = Callable[[Sequence[str], Block], Mapping[str, Scores]]


def race(candidates: Sequence[str], play: PlayFn, config: RaceConfig) -> RaceResult:
  """Races `candidates` against `INCUMBENT` on paired seed blocks; see the module docstring."""
  if not candidates or len(set(candidates)) != len(candidates) or INCUMBENT in candidates:
    raise ValueError(f"candidates must be distinct names other than {INCUMBENT!r}: {candidates}")
  live = list(candidates)
  race_scores: dict[str, dict[str, float]] = {a: {} for a in [INCUMBENT, *candidates]}
  all_scores: dict[str, dict[str, float]] = {a: {} for a in [INCUMBENT, *candidates]}
  dropped: dict[str, dict[str, Any]] = {}
  episodes = 0
  plan = blocks(config)
  stages = [b for b in plan if b.kind == "race"]

  def _play(arms: list[str], block: Block) -> None:
    nonlocal episodes
    got = play(arms, block)
    for arm in arms:
      if arm not in got:
        raise ValueError(f"play() returned no scores for {arm!r} in {block.name}")
      scores = dict(got[arm])
      episodes += len(scores)
      all_scores[arm].update({f"{block.name}:{u}": s for u, s in scores.items()})
      if block.kind == "race":
        race_scores[arm].update({f"{block.name}:{u}": s for u, s in scores.items()})

  for i, block in enumerate(stages):
    _play([INCUMBENT, *live], block)
    if i == len(stages) - 1 or len(live) == 0:
      break
    gains = {c: paired_gains(race_scores[c], race_scores[INCUMBENT]) for c in live}
    best = max(live, key=lambda c: float(gains[c].mean()))
    for c in list(live):
      worse, stat = _upper_below_zero(gains[c], config, config.seed + i)
      vs = INCUMBENT
      if not worse and c != best:
        worse, stat = _upper_below_zero(paired_gains(race_scores[c], race_scores[best]),
                                        config, config.seed + i)
        vs = best
      if worse:
        live.remove(c)
        dropped[c] = {"stage": block.name, "vs": vs, "statistic": stat}
  summaries = {c: paired_summary(race_scores[c], race_scores[INCUMBENT]) for c in candidates}
  if not live:
    return RaceResult(None, None, "all_dropped", all_scores, dropped, None, None, summaries,
                      episodes)
  survivor = max(live, key=lambda c: summaries[c]["mean_gain"])
  test = final_test(paired_gains(race_scores[survivor], race_scores[INCUMBENT]),
                    config.level / len(candidates), config)
  if not test["passed"]:
    return RaceResult(None, survivor, "rejected_test", all_scores, dropped, test, None,
                      summaries, episodes)
  confirm_block = [b for b in plan if b.kind == "confirm"]
  confirm = None
  if confirm_block:
    (cb,) = confirm_block
    _play([INCUMBENT, survivor], cb)
    pre = f"{cb.name}:"
    confirm = paired_summary({u: s for u, s in all_scores[survivor].items() if u.startswith(pre)},
                             {u: s for u, s in all_scores[INCUMBENT].items() if u.startswith(pre)})
    if not confirm["mean_gain"] > 0:
      return RaceResult(None, survivor, "rejected_confirm", all_scores, dropped, test, confirm,
                        summaries, episodes)
  return RaceResult(survivor, survivor, "accepted", all_scores, dropped, test, confirm,
                    summaries, episodes)


# --- simulation ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SimulatedArms:
  """Synthetic arms: score = base + seed effect + arm effect + per-episode noise.

  The seed effect (`seed_sd`) is shared by every arm on a unit (paired); the
  noise (`noise_sd`, Crafter's per-episode spread is 10-20 progression
  points) is drawn afresh for every episode. `effects` maps arm -> true effect.
  Binary arms (`binary=True`) score 100 with probability `base/100 + effect/100`
  (clipped), independently per episode.
  """

  effects: Mapping[str, float]
  noise_sd: float = 13.0
  seed_sd: float = 0.0
  base: float = 20.0
  binary: bool = False

  def play(self, rng: np.random.Generator) -> PlayFn:
    seed_effects: dict[int, float] = {}

    def play(arms: Sequence[str], block: Block) -> dict[str, dict[str, float]]:
      units = range(block.offset, block.offset + block.size)
      for u in units:
        if u not in seed_effects:
          seed_effects[u] = float(rng.normal(0.0, self.seed_sd)) if self.seed_sd else 0.0
      out = {}
      for arm in arms:
        eff = self.effects.get(arm, 0.0)
        if self.binary:
          p = min(max((self.base + eff) / 100.0, 0.0), 1.0)
          out[arm] = {str(u): 100.0 * float(rng.random() < p) for u in units}
        else:
          out[arm] = {str(u): self.base + seed_effects[u] + eff
                      + float(rng.normal(0, self.noise_sd)) for u in units}
      return out

    return play


def simulate(config: RaceConfig, arms: SimulatedArms, *, races: int = 1000,
             seed: int = 0) -> dict[str, float]:
  """Accept rate (per candidate and any) and mean episodes per round over `races` races."""
  rng = np.random.default_rng(seed)
  candidates = [a for a in arms.effects if a != INCUMBENT]
  accepted = {c: 0 for c in candidates}
  episodes = 0
  # The bootstrap's resampling indices stay fixed across races (the data differ), so they are
  # drawn once per sample size.
  for _ in range(races):
    res = race(candidates, arms.play(rng), config)
    episodes += res.episodes
    if res.accepted:
      accepted[res.accepted] += 1
  out = {f"accept_{c}": n / races for c, n in accepted.items()}
  out["accept_any"] = sum(accepted.values()) / races
  out["episodes_per_round"] = episodes / races
  return out


def simulate_greedy(arms: SimulatedArms, *, episodes: int = 10, races: int = 1000,
                    seed: int = 0) -> dict[str, float]:
  """The authors' rule: one candidate's mean on fixed seeds against a stored incumbent score.

  The incumbent's score was measured once on the same seeds (shared seed
  effects, its own noise) and is never re-measured; the candidate is
  accepted when its mean is higher. Costs `episodes` episodes per round.
  """
  rng = np.random.default_rng(seed)
  (cand,) = [a for a in arms.effects if a != INCUMBENT]
  accepted = 0
  for _ in range(races):
    play = arms.play(rng)
    block = Block("fixed", "race", 0, episodes)
    stored = np.mean(list(play([INCUMBENT], block)[INCUMBENT].values()))
    mean = np.mean(list(play([cand], block)[cand].values()))
    accepted += bool(mean > stored)
  return {f"accept_{cand}": accepted / races, "episodes_per_round": float(episodes)}
