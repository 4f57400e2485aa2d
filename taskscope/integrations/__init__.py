"""Instrumentation of other libraries: each in its own private module, imported on demand.

The public entry points (``taskscope.instrument_openai`` and friends) are re-exported by the
``taskscope`` facade. A module here never imports its library at import time: the library is
an optional extra, imported only when its ``instrument_*`` function is called.
"""
