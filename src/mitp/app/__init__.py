"""The mitp application: the command line, training, comparison, benchmarks and the prefix cache.

It is built on the library (``mitp.backbones``, ``mitp.methods``, ``mitp.data``,
``mitp.model_folder``, ``mitp.metrics``, ``mitp.params``, ``mitp.configuration``), which
never imports from here (tests/test_architecture.py enforces the direction).
"""
