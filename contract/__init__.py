"""The torch-free contract between the API and the workers.

``jobs``: payloads, statuses, events, error codes, results and progress;
``keys``: every Redis key name; ``models``: what a worker says of a model;
``params``/``spec``/``methods``: each method's parameters and inputs. The API and
the worker import these; neither imports the other.
"""
