"""The active loop: score -> select -> train -> evaluate, repeated over a schedule of
training-set sizes, one Ray Tune trial per (strategy, seed).

plan.py (pure draws and resource plans), core.py (the rounds, collaborators injected),
stages.py (the real collaborators), driver.py (Ray Tune), results.py (tables and plots).
"""
