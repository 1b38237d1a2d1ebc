"""AutoMem in JAX: LLM agents that manage their own memory while playing games.

Subpackages (imports flow downward): envs, memory, models -> llm -> agent ->
rollout -> structure (Loop 1), proficiency (Loop 2).
"""

__version__ = "0.1.0"
