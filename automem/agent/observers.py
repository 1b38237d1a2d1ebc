"""Helper observers, as the agent uses them.

The library itself (each observer's code and parameter schema) lives in
`automem.memory.observers`, below the structure that validates against it;
this module is the agent's view of it.
"""

from automem.memory.observers import (
    OBSERVERS,
    StepView,
    available_observers,
    register_observer,
    run_observer,
    run_observers,
    state_key,
    vital_levels,
)

__all__ = ["OBSERVERS", "StepView", "available_observers", "register_observer", "run_observer",
           "run_observers", "state_key", "vital_levels"]
