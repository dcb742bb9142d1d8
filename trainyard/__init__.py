"""Trainyard's domain: what the API and the workers both stand on (job spec, database, lifecycle, artifact
store, data sets, sweeps, queueing, settings). It imports neither Flask, Celery tasks nor TensorFlow."""
