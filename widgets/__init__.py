"""Notebook widgets for OPD Workbench: they consume per-step records only (docs/records.md).

- `TrainingDashboard`: trainer callback drawing live (JupyterLab) or final (papermill) plotly figures.
- `RecordStore`: bounded per-run storage of records (what the figures are built from).
- `widgets.figures`: pure functions RecordStore -> plotly `go.Figure` (unit-testable without Jupyter).
"""

from .dashboard import TrainingDashboard
from .store import RecordStore, Series

__all__ = ["TrainingDashboard", "RecordStore", "Series"]
