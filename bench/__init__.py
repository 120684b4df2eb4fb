"""Benchmarks of the storage service, run against real service processes (`make bench`).

``bench.harness`` sets up what every benchmark needs (a throw-away PostgreSQL database, a data
directory, a local location, a bucket, gunicorn service processes, /proc readings);
``bench.memory`` measures the worker's memory while it streams big uploads and downloads;
``bench.run`` runs them and records the figures in ``docs/benchmarks.md``.
Targets are checked here, not in the (timed) test suite.
"""
