"""Drop-in memory-augmented modules built on the memops ops.

    NTMCell, NTM                   the Neural Turing Machine (memops.nn.ntm)
    NSE, MMANSE, SharedMemoryNSE   Neural Semantic Encoders (memops.nn.nse)
    SequenceClassifier, NLIClassifier   the NSE paper's text classifiers (memops.nn.classifiers)
"""

from .classifiers import NLIClassifier, SequenceClassifier
from .nse import MMANSE, NSE, NSEOutput, SharedMemoryNSE
from .ntm import NTM, NTMCell, NTMState, NTMTrace

__all__ = ["NTM", "NTMCell", "NTMState", "NTMTrace", "NSE", "MMANSE", "SharedMemoryNSE", "NSEOutput",
           "SequenceClassifier", "NLIClassifier"]
