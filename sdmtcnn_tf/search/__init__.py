"""Hyperparameter search on Keras Tuner (`python -m sdmtcnn_tf.tune`).

space.py (what is searched: config flags and their ranges), objective.py (what is optimised:
a metrics.json key or Δm), hypermodel.py (the HyperModel, the Tuner whose trials are training
runs, the oracles, the chief's server), leaderboard.py and plot.py (the results), workers.py
(the chief and workers on localhost for --num_workers).
"""
