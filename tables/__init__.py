"""Faust tables and the feature logic they hold."""
