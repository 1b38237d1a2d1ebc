"""memory package (see DESIGN.md)."""
