"""Drop-in memory-augmented modules built on the memops ops.

    NTMCell, NTM   the Neural Turing Machine (memops.nn.ntm)
"""

from .ntm import NTM, NTMCell, NTMState, NTMTrace

__all__ = ["NTM", "NTMCell", "NTMState", "NTMTrace"]
