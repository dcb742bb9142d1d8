"""Sweeps: a search over job specs whose trials are ordinary jobs.

`search` (paths, parameter types, the seeded plan) and `rules` (ranking, median early stopping) are pure;
`config` checks a request against the job-spec validator; `controller` is the glue to the database and
the queue. No Flask here: workers drive sweeps too.
"""
