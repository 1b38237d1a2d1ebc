"""llm package (see DESIGN.md)."""
