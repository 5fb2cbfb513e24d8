"""editserve worker: the queue consumer and the editing engine (``worker.engine``)."""
