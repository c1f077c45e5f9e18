"""Task selection: strategies (a dict of plain functions, strategies.py), stratification,
INSTA similarity and encoder alignment, RDS+ (rds.py), the Task Map (taskmap.py) and the
selected.json contract (select.py)."""
