"""The MH-GAN math: random streams, pickers, calibrators and thinning.

numpy only: nothing here imports torch, Ray, pyarrow or touches a file. Every
layer above may import it; it imports only :mod:`mhgan_dist.errors`.
"""
