"""Stage package `fourview.recon` (see docs/architecture.md)."""
