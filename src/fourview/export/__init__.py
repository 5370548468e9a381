"""Stage package `fourview.export` (see docs/architecture.md)."""
