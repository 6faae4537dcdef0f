"""`memops.tasks`, kept under its old name: the application's `memops.app.tasks`, the same module
objects (its submodules too, so `memops.tasks.recall.Recall is memops.app.tasks.recall.Recall`)."""

import sys

from .app import tasks as _tasks
from .app.tasks import recall as _recall  # noqa: F401  (the one submodule its __init__ does not import)

for _name, _module in list(sys.modules.items()):
    if _name.startswith("memops.app.tasks."):
        sys.modules["memops.tasks." + _name[len("memops.app.tasks."):]] = _module
sys.modules[__name__] = _tasks
