"""Single-series detectors tried in the NAB lab (bench/nab_lab.py); the product detector is analytics.series_detector."""
