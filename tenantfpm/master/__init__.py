"""The master: one event loop (arbiter.py) driving one Pool per tenant (pool.py),
answering the control API (control.py)."""
