"""The progress bars of long loops, one policy for all."""
from __future__ import annotations


def bar(iterable, desc: str, progress: bool, **options):
    """``iterable`` in a transient tqdm bar titled ``desc``, shown when ``progress`` is asked and stderr is a
    terminal (tqdm's ``disable=None``): a log file gets the loops' one-line summaries, not a flood of bars."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, disable=None if progress else True, **options)
