"""The active loop: score -> select -> train -> evaluate, repeated over a schedule of
training-set sizes, one Ray Tune trial per (strategy, seed).

plan.py (pure draws and resource plans), rounds.py (the rounds, their stages injected:
raysys.stages), driver.py (Ray Tune), results.py (tables and plots).
"""
