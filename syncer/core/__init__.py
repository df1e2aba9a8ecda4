"""The pure core: the model, references, selection, access rules, policy decisions, the plan,
how values are written (Markdown, redaction), cosign's formats. No I/O and no imports from the
rooms above it."""
