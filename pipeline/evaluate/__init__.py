"""Evaluation: `driver.py` streams the real and synthetic tables once each, scores them (`metrics.py`), draws the
report's figures (`plots.py`) and logs both to MLflow; `audit.py` finds protected training values in a model or
an output."""
