"""The app templates bundled with Formwork, shipped beside the ``formwork`` package.

One folder per template: ``app.json`` (a portable app document, see ``formwork.metadata.portable``) and
optionally ``demo.py`` with ``generate(run)`` (its demo data, see ``formwork.runtime.demo``).
"""
