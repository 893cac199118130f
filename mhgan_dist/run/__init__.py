"""A run's configuration and its files: config, model recommendations, the store,
the run record (run.json, manifest.json, _SUCCESS), the output schema, the
lease and the nightly schedule, and fault injection for tests.

No torch and no Ray: the job's driver plans and records a run with this package.
"""
