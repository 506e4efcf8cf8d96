"""The wire contract between the daemon and its clients.

``spec.py`` defines it; ``types.py`` (Python attrs classes), ``client_vscode/src/protocol.ts``, ``fixtures/``
and the reference in ``README.md`` are generated from it by ``python -m overnight.protocol.generate``.
``converter.make_converter()`` is the converter to use with pygls. This module imports nothing heavy, so
the generator runs even when the generated code does not import.
"""

from .spec import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
