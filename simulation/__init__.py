"""The decision-quality harness: how often the gate, the guard and the retrain trigger are wrong.

Measured on the built-in use cases' real data by ``benchmarks/bench_decisions.py``; the figures
and the method are in ``docs/decisions.md``. A fast, seeded version runs in the tests and holds
the documented bounds (``tests/unit/test_decision_quality.py``).
"""
