"""Shipped samples of every log format and the demo scenario generator (``sample_logs.scenario``)."""
