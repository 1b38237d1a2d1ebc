"""agent package (see DESIGN.md)."""
