"""The LOG/PLAN memory agent of one episode, driven as a state machine.

Per env step, as the episode's `MemoryStructure` defines:

- LOG: the model sees the outcome of the previous action and the new
  observation and may run the phase's memory commands, turn after turn,
  until `<|DONE|>` or `log.max_iterations`; each turn's command results come
  back as the next user message (the `follow_up` template).
- PLAN: it may run the phase's (read-only) commands and must commit one
  `<|ACTION|>name<|END|>`; an unknown action name is repaired through the
  structure's `action_aliases` or refused and PLAN goes on; a committed
  action the structure's `action_checks` reject is sent back with a message
  (at most `max_rejections` times a step); without a valid action after
  `plan.max_iterations` turns the structure's fallback action is taken (the
  first of `fallback_action`, `fallback_alternatives` the task offers).

Around the turns the harness applies the structure's hooks (harness-maintained
files, retention; `hooks.harness` / `hooks.retention` say whether at the start
of a step or after LOG), shows pinned file views at {pinned}, size warnings
and observers at {helpers}, and switches to a mode's template and op set
while the mode's observer fires. Every text the model sees comes from the
structure (templates and `texts`).

Two-model mode: LOG and PLAN's memory consultation are "specialist" turns
(the tuned memory model; an adapter name or a second client) and one final
"commit" turn goes to the untouched "base" model, which writes the ACTION.

The agent never calls the LLM or the env. The runner asks every live agent
for `pending_request()`, sends them all in one concurrent `generate` call,
hands each result back with `on_llm_result`; once every live agent has an
`action` it steps the env batch and calls `on_env_step`. Trajectory records
accumulate in the agent; the runner takes them with `drain_records()`.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Sequence
from typing import Any

from automem.agent import harness, prompts
from automem.agent.metrics import EpisodeMetrics
from automem.agent.observers import StepView, run_observers
from automem.agent.trajectory import End, Step, Turn
from automem.envs.base import (
    ActionCheck,
    ActionReader,
    EpisodeStats,
    NameReader,
    Observation,
    StepResult,
)
from automem.llm.types import LLMRequest, LLMResult
from automem.memory import (
  TEXTS,
  Command,
  CommandResult,
  MemoryStore,
  ParseError,
  StructureError,
  diff_snapshots,
  execute,
  format_results,
  parse_commands,
)
from automem.memory.action_checks import run_check

# The default commit turn of two-model mode (the structure's `texts.commit`).
COMMIT_PROMPT = TEXTS["commit"][0]


class Phase(enum.Enum):
  LOG = "log"
  PLAN = "plan"
  COMMIT = "commit"  # two-model mode: the base model writes the action
  ACT = "act"  # an action is committed; waiting for the env step
  DONE = "done"


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Sampling parameters of one kind of turn."""

  temperature: float = 0.7
  top_p: float = 1.0
  top_k: int = -1
  max_new_tokens: int = 256
  stop: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """How the agent talks to the model(s); the structure says what it says.

  Attributes:
    layout: prompt layout, "cached" (ours), or "paper" / "paper_first" (the
      paper's, observation in the system prompt after / before the
      instructions; for comparison).
    two_model: memory turns to the specialist, the action commit to the base
      model; False sends every turn to one model.
    specialist_adapter: LoRA adapter name put on specialist requests (None:
      the specialist is a separate client, or the base model itself).
    memory_sampling: sampling of LOG and memory-consultation turns.
    action_sampling: sampling of PLAN (one-model) and commit turns.
    seed: base of the per-request sampling seeds (None: unseeded).
    max_prompt_chars: when a prompt grows past this many characters, the
      phase's further turns are cut short (LOG moves on to PLAN, PLAN takes
      the fallback action) and PLAN starts without the step's LOG turns; a
      phase's first message that would pass it leaves out, in turn, the
      helper text, the pinned views, the history and the file index (each
      replaced by `texts.trimmed`; the turn records `prompt_trimmed`);
      0 = no cap. Keeps small-context models in bounds.
  """

  layout: str = "cached"
  two_model: bool = False
  specialist_adapter: str | None = None
  memory_sampling: SamplingConfig = SamplingConfig()
  action_sampling: SamplingConfig = SamplingConfig()
  seed: int | None = None
  max_prompt_chars: int = 0


@dataclasses.dataclass(frozen=True)
class AgentRequest:
  """A request of one agent with the role that should serve it."""

  role: str  # "specialist" | "base"
  request: LLMRequest


class EpisodeAgent:
  """One episode's LOG/PLAN loop. See the module docstring for the protocol.

  Args:
    episode_id, game, task, seed: what is played (ids go into records).
    structure: the `MemoryStructure` (templates, ops, limits, observers); its
      `task_overrides` matching `task` are applied here.
    store: the episode's `MemoryStore`, already reset.
    action_names: the env's offered action names (the prompt's list).
    config: prompt layout, model routing and sampling.
    action_reader: the env's `action_reader` (`TextEnv.action_reader`): it judges the
      model's action text (aliases, arguments, ...) and the accepted text goes to the env
      as written. Default: `NameReader(action_names)`, only the offered names.
  """

  def __init__(
      self,
      *,
      episode_id: str,
      game: str,
      task: str,
      seed: int,
      structure: Any,
      store: MemoryStore,
      action_names: Sequence[str],
      config: AgentConfig | None = None,
      action_reader: ActionReader | None = None,
  ):
    self.episode_id = episode_id
    self.game, self.task, self.seed = game, task, seed
    structure = structure.for_task(task)
    self.structure = structure
    self.store = store
    self.config = config or AgentConfig()
    if self.config.layout not in prompts.LAYOUTS:
      raise ValueError(f"unknown prompt layout {self.config.layout!r}")
    self.action_names = tuple(action_names)
    self._reader = action_reader if action_reader is not None else NameReader(self.action_names)
    fallback = structure.resolve_fallback(self.action_names)
    if fallback is None:
      raise StructureError(
          "fallback_alternatives",
          f"neither the fallback action {structure.fallback_action!r} nor an alternative "
          f"{list(structure.fallback_alternatives)} is an action of {game}/{task}: "
          f"{', '.join(self.action_names)}")
    self.fallback_action = fallback
    self.metrics = EpisodeMetrics(episode_id=episode_id, game=game, task=task, seed=seed)
    self.phase = Phase.DONE
    self.step = 0
    self.turn = 0  # LLM turn index within the current phase
    self.action: str | None = None
    self.stats = EpisodeStats(game=game, task=task, seed=seed)
    self.error: str | None = None
    self._system = ""
    self._history: list[prompts.HistoryEntry] = []
    self._views: list[StepView] = []
    self._turns: list[dict[str, str]] = []  # the current step's messages
    self._step_records: list[dict[str, Any]] = []
    self._records: list[dict[str, Any]] = []
    self._last_action = structure.text("no_last_action")
    self._last_outcome = structure.text("first_outcome")
    self._observation = ""
    self._modes: dict[str, Any] = {}  # mode name -> the structure while it is on
    self._mode: str | None = None  # the mode of the current phase
    self._rejections = 0  # action-check rejections this step
    self._trimmed: list[str] = []  # parts of this step's first messages left out (prompt cap)
    self._before_hooks: dict[str, str] | None = None  # memory before the last hooks ran
    self._log_ran = False
    self._fallback = False
    self._pending: AgentRequest | None = None
    self._start_time = 0.0
    self._num_requests = 0
    self._taken: list[str] = []  # actions taken, and when achievements unlocked (the end record)
    self._unlock_steps: dict[str, int] = {}

  # --- driving the agent ---------------------------------------------------------------------

  def start(self, observation: Observation) -> None:
    """Begins the episode on the env's first observation."""
    self._start_time = time.monotonic()
    hints = self._reader.hints
    actions = [f"{a} ({hints[a]})" if a in hints else a for a in self.action_names]
    self._system = prompts.system_text(self.structure, actions, self.task)
    self._observation = observation.text
    self._views.append(StepView(None, 0.0, observation.text, dict(observation.info)))
    self._hooks("step_start")
    self._begin_step(log=bool(self.structure.log_first_step))

  @property
  def live(self) -> bool:
    return self.phase is not Phase.DONE

  def pending_request(self) -> AgentRequest | None:
    """The request this agent waits on, or None (waiting for the env, or done)."""
    if self.phase not in (Phase.LOG, Phase.PLAN, Phase.COMMIT):
      return None
    if self._pending is None:
      if self._over_budget():
        if self.turn > 0 and self.phase is not Phase.COMMIT:
          self._cut_phase()
          if self.phase is Phase.ACT:
            return None
        if self.phase is Phase.PLAN and self.turn == 0 and self._log_ran:
          # PLAN must run: start it afresh without this step's LOG turns (memory has them).
          self._log_ran = False
          self._turns = [{"role": "user", "content": self._user_prompt("plan")}]
      self._pending = self._make_request()
    return self._pending

  def on_llm_result(self, result: LLMResult) -> None:
    """Consumes the result of `pending_request()` and advances the state machine."""
    pending = self._pending
    if pending is None:
      raise RuntimeError(f"{self.episode_id}: an LLM result without a pending request")
    self._pending = None
    m = self.metrics
    m.llm_calls += 1
    m.prompt_tokens += int(result.prompt_tokens)
    m.completion_tokens += int(result.completion_tokens)
    m.cached_tokens += int(result.cached_tokens)
    record = self._turn_record(pending, result)
    if not result.ok:
      m.failed_llm_calls += 1
      record["phase_end"] = "llm_error"
      self._step_records.append(record)
      self.fail(f"LLM request failed: {result.error}")
      return
    before = self.store.snapshot()
    self._before_hooks = None
    parsed = parse_commands(result.text)
    self._turns.append({"role": "assistant", "content": result.text})
    self.turn += 1
    if self.phase is Phase.LOG:
      self._log_turn(parsed.items, record)
    elif self.phase is Phase.PLAN:
      self._plan_turn(parsed.items, record)
    else:
      self._commit_turn(parsed.items, record)
    # The turn's own changes; hooks that ran at its end are in record["harness_diff"].
    after = self._before_hooks if self._before_hooks is not None else self.store.snapshot()
    record["memory_diff"] = diff_snapshots(before, after)
    self._step_records.append(record)

  def on_env_step(self, result: StepResult) -> None:
    """Takes the outcome of the committed action; starts the next step or ends."""
    if self.phase is not Phase.ACT or self.action is None:
      raise RuntimeError(f"{self.episode_id}: an env step without a committed action")
    m = self.metrics
    m.env_steps += 1
    if not result.valid_action:
      m.invalid_actions += 1
    for rec in reversed(self._step_records):
      if rec["action"] is not None:
        rec["reward"] = float(result.reward)
        break
    st = self.structure
    outcome = st.text("outcome", reward=f"{float(result.reward):g}")
    if self._fallback:
      outcome += st.text("outcome_fallback")
    if result.feedback:
      outcome += st.text("outcome_feedback", feedback=result.feedback)
    if result.done:
      outcome += st.text("outcome_end", reason=result.stats.end_reason)
    self._history.append(prompts.HistoryEntry(self.step, self.action, outcome))
    self._views.append(StepView(self.action, float(result.reward), result.observation.text,
                                dict(result.observation.info), result.valid_action,
                                tuple(result.stats.achievements)))
    unlocked = [a for a in result.stats.achievements if a not in self.stats.achievements]
    self._taken.append(self.action)
    for a in unlocked:
      self._unlock_steps.setdefault(a, self.step)
    harness_diff = {} if result.done else self._hooks("step_start")
    self._step_records.append(Step(
        episode_id=self.episode_id, step=self.step, action=self.action,
        fallback=self._fallback, reward=float(result.reward), done=bool(result.done),
        valid_action=bool(result.valid_action), feedback=result.feedback,
        progression=result.stats.progression, achievements=list(result.stats.achievements),
        unlocked=unlocked, observation=result.observation.text,
        # Memory changes the harness made after this step's action (harness files,
        # retention), applied before the next step's turns.
        extra={"harness_diff": harness_diff}).to_json())
    self._records.extend(self._step_records)
    self._step_records = []
    self.stats = result.stats
    self._last_action, self._last_outcome = self.action, outcome
    self._observation = result.observation.text
    self.action = None
    if result.done:
      self._finish(result.stats)
      return
    self.step += 1
    self._begin_step(log=True)

  def fail(self, reason: str) -> None:
    """Ends the episode with an error (failed LLM request, crashed env)."""
    if self.phase is Phase.DONE:
      return
    self.error = reason
    self._records.extend(self._step_records)
    self._step_records = []
    self._finish(dataclasses.replace(self.stats, end_reason="error", error=reason))

  def drain_records(self) -> list[dict[str, Any]]:
    """Trajectory lines produced since the last call (turns, step lines, the end line)."""
    out, self._records = self._records, []
    return out

  # --- phases -----------------------------------------------------------------------------

  def _begin_step(self, *, log: bool) -> None:
    self._turns, self._step_records = [], []
    self._log_ran, self._fallback = False, False
    self._rejections = 0
    self._trimmed = []
    self.turn = 0
    self.phase = Phase.LOG if log else Phase.PLAN
    self._turns.append({"role": "user", "content": self._user_prompt(self.phase.value)})

  def _hooks(self, point: str) -> dict[str, Any]:
    """Runs the structure's hooks at `point` (harness files, then retention); the diff."""
    st = self.structure
    if not st.harness_files and not any(f.keep_last for f in st.files):
      return {}
    before = self._before_hooks = self.store.snapshot()
    if st.hooks.harness == point:
      harness.update_harness_files(st, self.store, self._views)
    if st.hooks.retention == point:
      harness.apply_retention(st, self.store)
    return diff_snapshots(before, self.store.snapshot())

  def _phase_structure(self, phase: str) -> Any:
    """The structure of `phase` now: the base one, or a mode's while its observer fires."""
    self._mode = harness.active_mode(self.structure, phase, self._views)
    if self._mode is None:
      return self.structure
    if self._mode not in self._modes:
      self._modes[self._mode] = self.structure.with_mode(self._mode)
    return self._modes[self._mode]

  def _current(self) -> Any:
    return self._modes[self._mode] if self._mode is not None else self.structure

  def _user_prompt(self, phase: str) -> str:
    st = self._phase_structure(phase)
    paper = self.config.layout != "cached"
    shown = phase == "plan" and self._log_ran
    observation = st.text("see_system") if paper else (
        st.text("see_above") if shown else self._observation)
    history = st.text("history_above") if shown else prompts.history_text(
        self._history, st.history_length, st.texts)
    values = {
        "file_index": st.text("see_system") if paper else self._file_index(),
        "history": history,
        "pinned": harness.pinned_text(st, self.store, phase),
        "step": self.step,
        "helpers": self._helpers(phase),
        "last_action": self._last_action,
        "last_outcome": self._last_outcome,
        "observation": observation,
    }
    text = st.user_prompt(phase, **values)
    limit = self.config.max_prompt_chars
    if limit > 0:  # a first message past the cap drops its optional parts, in this order
      used = len(self._system) + sum(len(t["content"]) for t in self._turns)
      for part in _TRIM_ORDER:
        if used + len(text) <= limit:
          break
        if values[part] and part in st.placeholders(phase, "user"):
          values[part] = st.text("trimmed")
          self._trimmed.append(part)
          text = st.user_prompt(phase, **values)
    return text

  def _follow_up(self, phase: str, results: Sequence[CommandResult]) -> str:
    st = self._current()
    return st.follow_up_prompt(
        phase, results=format_results(results),
        file_index=st.text("see_system") if self.config.layout != "cached" else self._file_index(),
        helpers=self._helpers(phase), step=self.step)

  def _file_index(self) -> str:
    return prompts.file_index_text(self.store, sizes=False, texts=self.structure.texts)

  def _helpers(self, phase: str) -> str:
    observed = run_observers(self.structure.observers_for(phase), self._views)
    warned = harness.size_warnings(self.structure, self.store, phase)
    return "\n".join(t for t in (observed, warned) if t)

  def _run(self, items: Sequence[Command | ParseError], phase: str,
           record: dict[str, Any]) -> list[CommandResult]:
    st = self._current()
    results = execute(self.store, list(items), phase=phase, structure=st)
    allowed = set(st.phase(phase).allowed_ops)
    m = self.metrics
    for item, res in zip(items, results):
      record["commands"].append(res.to_record())
      if isinstance(item, ParseError):
        m.invalid_commands += 1
        continue
      m.commands[item.op] = m.commands.get(item.op, 0) + 1
      if item.op not in allowed:
        m.invalid_commands += 1
      elif not res.ok:
        m.failed_commands[item.op] = m.failed_commands.get(item.op, 0) + 1
    return results

  def _log_turn(self, items: Sequence[Command | ParseError], record: dict[str, Any]) -> None:
    items = _cut_after(items, "DONE")
    results = self._run(items, "log", record)
    done = any(r.ok and r.op == "DONE" for r in results)
    limit = self.structure.log.max_iterations
    if not done and self.turn < limit:
      self._turns.append({"role": "user", "content": self._follow_up("log", results)})
      return
    self._log_ran = True
    record["phase_end"] = "done" if done else "max_iterations"
    self.phase, self.turn = Phase.PLAN, 0
    harness_diff = self._hooks("after_log")
    if harness_diff:
      record["harness_diff"] = harness_diff  # applied after this turn's own memory_diff
    note = "" if done else self.structure.text("log_limit", limit=limit) + "\n\n"
    text = f"{format_results(results)}\n\n{note}{self._user_prompt('plan')}"
    self._turns.append({"role": "user", "content": text})

  def _plan_turn(self, items: Sequence[Command | ParseError], record: dict[str, Any]) -> None:
    two_model = self.config.two_model
    if two_model:
      cut = [i for i in items if isinstance(i, Command) and i.op == "ACTION"]
      items = items[: items.index(cut[0])] if cut else items
      over = bool(cut) or not any(isinstance(i, Command) for i in items)
    else:
      items = _cut_after(items, "ACTION")
    results = self._run(items, "plan", record)
    action = None
    limit = self.structure.plan.max_iterations
    if not two_model and items and isinstance(items[-1], Command) and items[-1].op == "ACTION":
      check = self._check_action(items[-1], results[-1], record)
      action = check and check.action
      if action is None and results[-1].ok:  # an unknown name: say so in the next turn
        c = record["commands"][-1]
        results[-1] = dataclasses.replace(results[-1], ok=False, text=c["result"])
      elif action is not None and self.turn < limit and self._rejected(check, record):
        c = record["commands"][-1]
        results[-1] = dataclasses.replace(results[-1], ok=False, text=c["result"])
        action = None
    if action is not None:
      record["phase_end"] = "action"
      self._commit(action, fallback=False)
      return
    if self.turn >= limit or (two_model and over):
      record["phase_end"] = "handoff" if two_model else "max_iterations"
      if two_model:
        self.phase, self.turn = Phase.COMMIT, 0
        self._turns.append({"role": "user", "content": f"{format_results(results)}\n\n"
                                                       f"{self.structure.text('commit')}"})
      else:
        self._commit(self.fallback_action, fallback=True)
      return
    text = self._follow_up("plan", results)
    if not two_model and not any(isinstance(i, Command) and i.op == "ACTION" for i in items):
      text += "\n\n" + self.structure.text("no_action")
    self._turns.append({"role": "user", "content": text})

  def _commit_turn(self, items: Sequence[Command | ParseError], record: dict[str, Any]) -> None:
    actions = [i for i in items if isinstance(i, Command) and i.op == "ACTION"]
    action = None
    if actions:
      results = self._run(actions[:1], "plan", record)
      check = self._check_action(actions[0], results[0], record)
      action = check and check.action
      if action is not None and self._rejected(check, record):
        self._turns.append({"role": "user", "content": record["commands"][-1]["result"]})
        return  # the commit turn again
    record["phase_end"] = "fallback" if action is None else "action"
    self._commit(action or self.fallback_action, fallback=action is None)

  def _check_action(self, item: Command, result: CommandResult,
                    record: dict[str, Any]) -> ActionCheck | None:
    """How the env reads a committed action (`check.action` is sent as it stands), repaired
    through the structure's aliases when the env refuses it; None when refused (the record
    says why: the env's feedback for a known name with bad arguments, else the list)."""
    if not result.ok:
      return None
    written = item.args[0]
    check = self._reader.check(written)
    if check.action is None:
      name = self.structure.repair_action(written, self.action_names)
      if name is not None:
        record["action_repair"] = {"written": written, "action": name}
        self.metrics.action_repairs += 1
        record["commands"][-1].update(
            result=self.structure.text("action_repaired", written=written, action=name))
        check = ActionCheck(name, name)
    if check.action is None:
      self.metrics.invalid_commands += 1
      text = f"[ERROR ACTION] {check.feedback}" if check.name is not None else self.structure.text(
          "unknown_action", action=written, actions=", ".join(self.action_names))
      record["commands"][-1].update(ok=False, result=text)
      return None
    record["action"] = check.action
    if check.name != check.action:  # an alias, arguments or a 16-point direction
      record["action_name"] = check.name
    if check.feedback:  # how the env read it; its step feedback repeats it to the model
      record["action_note"] = check.feedback
    return check

  def _rejected(self, check: ActionCheck, record: dict[str, Any]) -> bool:
    """Whether an action check sends the action back (recorded in the turn); at most
    `max_rejections` per step, then actions go through unchecked. Checks see the name."""
    action = check.name or check.action
    st = self.structure
    if self._rejections >= st.max_rejections:
      return False
    if self._mode is not None and not next(m for m in st.modes if m.name == self._mode).checks:
      return False
    for spec in st.action_checks:
      reason = run_check(spec, action, self._views)
      if reason:
        self._rejections += 1
        self.metrics.action_rejections += 1
        left = st.max_rejections - self._rejections
        record["action"] = None
        record.pop("action_name", None)
        record.pop("action_note", None)
        record["check_rejection"] = {"check": spec.kind, "action": check.action, "reason": reason}
        record["commands"][-1].update(
            ok=False, result=st.text("action_rejected", action=check.action, reason=reason,
                                     left=left))
        return True
    return False

  def _over_budget(self) -> bool:
    limit = self.config.max_prompt_chars
    return limit > 0 and len(self._system) + sum(len(t["content"]) for t in self._turns) > limit

  def _cut_phase(self) -> None:
    """Ends the phase early because the prompt is too long (see `max_prompt_chars`)."""
    note = self.structure.text("prompt_cut", limit=self.config.max_prompt_chars)
    if self._step_records:
      self._step_records[-1]["phase_end"] = "prompt_budget"
    if self.phase is Phase.LOG:
      self._log_ran = True
      self.phase, self.turn = Phase.PLAN, 0
      last = self._turns.pop()  # the follow-up with the last results
      self._turns.append({"role": "user",
                          "content": f"{last['content']}\n\n{note}\n\n{self._user_prompt('plan')}"})
    elif self.config.two_model:
      self.phase, self.turn = Phase.COMMIT, 0
      last = self._turns.pop()
      self._turns.append({"role": "user",
                          "content": f"{last['content']}\n\n{self.structure.text('commit')}"})
    else:
      self._commit(self.fallback_action, fallback=True)

  def _commit(self, action: str, *, fallback: bool) -> None:
    if fallback:
      self.metrics.fallback_actions += 1
    self._fallback = fallback
    self.action = action
    self.phase = Phase.ACT

  # --- requests and records -------------------------------------------------------------------

  def _role(self) -> str:
    if self.phase is Phase.COMMIT:
      return "base"
    if self.phase is Phase.LOG or self.config.two_model:
      return "specialist"
    return "base"

  def _make_request(self) -> AgentRequest:
    role = self._role()
    messages = prompts.build_messages(
        layout=self.config.layout, system=self._system, turns=self._turns,
        observation=self._observation,
        file_index=self.store.index_text() if self.config.layout != "cached" else "",
        texts=self.structure.texts)
    memory_turn = role == "specialist"
    sampling = self.config.memory_sampling if memory_turn else self.config.action_sampling
    adapter = self.config.specialist_adapter if memory_turn and self.config.two_model else None
    seed = None
    if self.config.seed is not None:
      seed = (self.config.seed * 1_000_003 + self.seed * 7919 + self._num_requests) % (2**31 - 1)
    self._num_requests += 1
    request = LLMRequest(
        messages=messages, temperature=sampling.temperature, top_p=sampling.top_p,
        top_k=sampling.top_k, max_new_tokens=sampling.max_new_tokens, stop=sampling.stop,
        seed=seed, adapter=adapter,
        request_id=f"{self.episode_id}/{self.step}/{self.phase.value}/{self.turn}",
        metadata={"episode_id": self.episode_id, "role": role})
    return AgentRequest(role, request)

  def _turn_record(self, pending: AgentRequest, result: LLMResult) -> dict[str, Any]:
    # The JSON form: commands, action, reward and diff are filled in as the turn runs.
    extra: dict[str, Any] = {"mode": self._mode}  # the structure's mode (None: the base one)
    if self._trimmed:  # parts of the step's first messages left out (max_prompt_chars)
      extra["prompt_trimmed"] = list(self._trimmed)
    return Turn(
        episode_id=self.episode_id, step=self.step,
        phase="log" if self.phase is Phase.LOG else "plan", subphase=self.phase.value,
        turn=self.turn, role=pending.role, adapter=pending.request.adapter,
        messages=[dict(m) for m in pending.request.messages], completion=result.text,
        finish_reason=result.finish_reason, error=result.error,
        prompt_tokens=int(result.prompt_tokens), completion_tokens=int(result.completion_tokens),
        cached_tokens=int(result.cached_tokens), sampling_seed=pending.request.seed,
        extra=extra,
    ).to_json()

  def _finish(self, stats: EpisodeStats) -> None:
    self.stats = stats
    self.phase = Phase.DONE
    self._pending = None
    self.action = None
    self.metrics.stats = stats.to_dict()
    self.metrics.wall_s = time.monotonic() - self._start_time
    self._records.append(End(
        episode_id=self.episode_id, stats=stats.to_dict(), metrics=self.metrics.to_dict(),
        error=self.error, final_memory=self.store.snapshot(),
        unlock_steps=dict(self._unlock_steps),
        replay={"seed": self.seed, "actions": list(self._taken)}).to_json())


# What a first message past `max_prompt_chars` leaves out first (see `_user_prompt`).
_TRIM_ORDER = ("helpers", "pinned", "history", "file_index")


def _cut_after(items: Sequence[Command | ParseError], op: str) -> list[Command | ParseError]:
  """`items` up to and including the first command `op` (later ones are not run)."""
  out = []
  for item in items:
    out.append(item)
    if isinstance(item, Command) and item.op == op:
      break
  return out

