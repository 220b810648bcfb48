"""Sign language tasks of the zoo; importing ``zoo.sign`` pulls in nothing heavy.

- :mod:`zoo.sign.recognition`: isolated-sign recognition on landmark sequences (RQE / RQE-SF encodings);
- ``python -m zoo.sign.train``: the zoo's one training CLI.
"""
