"""Pose transfer on demand, for app.py's page and its benchmark: the dataset's test people and poses (gallery), and a
session that edits a target pose and re-renders one source person in it through models.pipeline (session). It
imports no web framework: app.py lays the page out and wires its events to these functions."""
