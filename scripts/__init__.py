"""Data tools, the demo, benchmarks and checks: run as `python scripts/NAME.py`; tests and the demo import them."""
