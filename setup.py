"""The one compiled part: hfstream/_q8_0.c. Everything else is in pyproject.toml.

optional=True: without a C compiler the install still succeeds, and Q8_0 goes through ggml's
reference encoder (the same bytes, ~10x slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("hfstream._q8_0", ["hfstream/_q8_0.c"], optional=True)])
