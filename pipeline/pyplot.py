"""matplotlib without a display: figures are drawn off-screen (Agg) on drivers and workers alike, and pyplot is
imported only when a figure is drawn (its import costs a job that draws none)."""
from typing import Any


def pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
