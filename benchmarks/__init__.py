"""fastnet's benchmarks: the asv suite (``bench_*.py``) and scripts (``jit_vs_numpy.py``)."""
