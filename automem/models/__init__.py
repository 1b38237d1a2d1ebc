"""models package (see DESIGN.md)."""
