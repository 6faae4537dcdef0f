"""`memops.data`, kept under its old name: the application's `memops.app.data`, the same module
objects (its submodules too)."""

import sys

from .app import data as _data

for _name, _module in list(sys.modules.items()):
    if _name.startswith("memops.app.data."):
        sys.modules["memops.data." + _name[len("memops.app.data."):]] = _module
sys.modules[__name__] = _data
