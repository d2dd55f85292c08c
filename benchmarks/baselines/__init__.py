"""Peer baselines run inside our benchmarks (SAELens trainer, sae-dashboard cards).

Import the submodules directly, e.g. ``from benchmarks.baselines.saelens_train
import train_saelens``; nothing heavy is imported here.
"""
