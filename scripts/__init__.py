"""Command-line tools around the entry points: data preparation, the demo, benchmarks, the release import.

Run them from the repository root, `python scripts/<name>.py --help`, once `make venv` has installed the project
(`pip install -e .`), which makes utils, data, models, losses, metrics, training, benchmarks and the entry points
importable. A script imports those, never another script.
"""
