"""python tools/gpu_suite [options]: the GPU suite (see __init__.py)."""

import os
import sys

if not __package__:  # run as a folder: import it as the package gpu_suite (tools/ on the path)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from gpu_suite.suite import main  # noqa: E402

sys.exit(main())
