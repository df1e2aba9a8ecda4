"""The audit trail: records under reports/records/, the Markdown reports made from them, and the atomic file writes and locks they rely on."""
