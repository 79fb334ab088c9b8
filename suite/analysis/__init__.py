"""Analysis of what was trained or shipped: any artefact evaluated (evaluation), per-layer sensitivity scans and
the configs proposed from them (sensitivity), figures (plots)."""
