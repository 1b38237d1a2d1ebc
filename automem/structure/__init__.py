"""Loop 1, structure optimisation: reviewer, revisions, selection (not built yet).

The data model it edits already exists: `automem.memory.MemoryStructure` with
`revise(changes, note)`, `structure_diff(a, b)` and `spec_reference()` for the
reviewer's prompt; runs record the exact structure they used
(`<run>/structures/<game>.json`), and `automem.rollout.seeds` keeps the
selection and test seed sets apart.
"""
