"""Processing off the request path: the worker loops, maintenance rounds, the worker's process."""
