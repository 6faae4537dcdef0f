"""matplotlib, imported only when a picture is drawn (it is an optional dependency: `memops[train]`)."""

import warnings

_warned = False


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None (with one warning) if it is not installed."""
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _warned:
            warnings.warn("memops: matplotlib is not installed, so no PNG is drawn; "
                          "pip install matplotlib (or memops[train])", stacklevel=2)
            _warned = True
        return None
    return plt


def save(fig, path):
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
