"""rollout package (see DESIGN.md)."""
