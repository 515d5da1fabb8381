"""One module per database the store runs on, each exposing ``DIALECT`` (see ``_dialect.py``)."""
