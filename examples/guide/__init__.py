"""The code samples of the documentation (docs/), each module a small app checked by tests/test_docs.py."""
