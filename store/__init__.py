"""Storage both processes use: the blob store, the asset index, metrics, ownership, retention."""
