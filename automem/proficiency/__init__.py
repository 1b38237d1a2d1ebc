"""proficiency package (see DESIGN.md)."""
