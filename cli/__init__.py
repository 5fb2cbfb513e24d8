"""The ``editserve`` command line: launching (``serve``, ``api``, ``worker``, ``gc``),
the client (``models``, ``methods``, ``status``, ``submit``), and one ``edit`` or ``fit``
subcommand per method, generated from its parameter schema (``cli.methods``), through
the service by default or in-process with ``--local`` (``cli.local``).

Torch-free: only ``--local`` and ``worker`` import the engine, lazily, so the API image
(no torch) runs every other command.
"""
