"""Speed and memory measurements, printed as JSON lines: `python -m benchmarks VERB --help`.

Each comparison is measured in one process, alternating the two sides so that machine noise
hits both alike; nothing here is asserted by the tests.
"""
