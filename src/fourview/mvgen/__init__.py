"""Stage package `fourview.mvgen` (see docs/architecture.md)."""
