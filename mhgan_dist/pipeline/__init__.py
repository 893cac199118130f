"""The Ray layer: proposal actors, the stages they run, the scheduler and the driver.

Everything Ray-specific in the project lives in this package; the classes and
functions it wraps run without Ray on a tiny batch (see the tests), and the
failure policy (:mod:`.ledger`) has no Ray in it at all.
"""
