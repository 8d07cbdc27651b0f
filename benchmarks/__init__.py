"""Benchmarks of the workbench, outside the library: `python -m benchmarks {rollout,step,teacher,dashboard,all}`.

They call the library's public API (and `widgets` for the dashboard's cost); the library never imports them.
Every number is a ratio against a baseline measured in the same run (docs/benchmarks.md).
"""
