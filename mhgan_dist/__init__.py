"""mhgan-dist: Metropolis-Hastings GAN sampling as a distributed batch job on Ray.

Packages by concern, each importing only those below it (docs/architecture.md):

    studies    the paper's toys, the calibrator study, the picker trade-off, the benchmarks
    report     the run report: metrics, figures, HTML
    pipeline   the Ray job (driver, stages, scheduler, actors)  |  training  |  quality
    run        config, the run record, the store, the lease, nightly runs (no torch, no Ray)
    models     model files and programs
    core       the MH-GAN math: pickers, calibrators, thinning, keyed randomness (numpy only)
    errors     the project's exceptions
"""
