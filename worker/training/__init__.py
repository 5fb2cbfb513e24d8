"""Data and training scripts for the small models the repository ships (issue: shipped models)."""
