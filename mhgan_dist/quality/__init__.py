"""Sample quality: metrics in numpy (:mod:`.metrics`), the scoring networks
(:mod:`.networks`), and the per-kind quality scores built from them (:mod:`.scores`).
"""
