"""Training: the reference GANs (:mod:`.gan`), density-ratio models for a frozen
generator (:mod:`.ratio`), what both are given (:mod:`.setup`) and the datasets
they read (:mod:`.datasets`). Used by ``jobs.train`` and ``jobs.fit_ratio``,
never by the sampling job.
"""
