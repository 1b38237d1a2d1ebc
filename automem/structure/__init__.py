"""structure package (see DESIGN.md)."""
