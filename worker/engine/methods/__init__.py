"""One module per editing method (METHODS.md A to E)."""
