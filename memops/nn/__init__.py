"""Drop-in memory-augmented modules built on the memops ops.

    NTMCell, NTM                   the Neural Turing Machine (memops.nn.ntm)
    NSE, MMANSE, SharedMemoryNSE   Neural Semantic Encoders (memops.nn.nse)
    SequenceClassifier, NLIClassifier   the NSE paper's text classifiers (memops.nn.classifiers)
    MemN2N                         End-to-End Memory Networks (memops.nn.memn2n)
    MemNN                          strongly supervised Memory Networks (memops.nn.memnn)
    DMN                            Dynamic Memory Networks, DMN+ for text (memops.nn.dmn)
"""

from .classifiers import NLIClassifier, SequenceClassifier
from .dmn import DMN
from .memn2n import MemN2N
from .memnn import MemNN
from .nse import MMANSE, NSE, NSEOutput, SharedMemoryNSE
from .ntm import NTM, NTMCell, NTMState, NTMTrace

__all__ = ["NTM", "NTMCell", "NTMState", "NTMTrace", "NSE", "MMANSE", "SharedMemoryNSE", "NSEOutput",
           "SequenceClassifier", "NLIClassifier", "MemN2N", "MemNN", "DMN"]
