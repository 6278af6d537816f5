"""A per-layer cell's step, by the cell's id: if-chains over the rows of the cell table, built at import.

The sequence-to-sequence decoder is written once for every per-layer cell: it calls ``cell_step``
/ ``cell_step_backward`` with the cell's id, and the chain calls ``<name>_step`` /
``<name>_step_backward`` of the row with that id (every cell's file has the pair, in the
interface kernels/cells.py describes). Why chains of compiled closures and not
functions passed as arguments: a kernel that takes a function argument is compiled per function
object, and Numba cannot find it in its on-disk cache again in a new process (every process would
recompile its callers). The chain is compiled into its caller, which is cached whole; the
id is tested once per row, never per element.

Every cell's step is compiled into each caller, whichever cell it runs: the layer kernels, which
a first run spends most of its compile time on, and the generation loop are built per cell
instead (per_cell.py).

Numba's cache does not notice a new row: after adding a cell, the cached callers still hold
the old chains. ``input_apart`` returns -1 for an id a compiled chain does not know, and the
kernels refuse it before any work ("clear the Numba cache": the __pycache__ of charlm/kernels).
"""
from numba import njit

from .cells import CELLS

PER_LAYER = sorted((c for c in CELLS.values() if not c.feeds_output), key=lambda c: c.id)


@njit(cache=True)
def _no_step(cell_id, *args):
    return None


@njit(cache=True)
def _unknown(cell_id):
    return -1


def _link(cell_id, step, rest):
    @njit
    def link(cid, *args):
        if cid == cell_id:
            step(*args)
        else:
            rest(cid, *args)
    return link


def _flag_link(cell_id, value, rest):
    @njit
    def link(cid):
        return value if cid == cell_id else rest(cid)
    return link


def _chain(entry):
    fn = _no_step
    for cell in reversed(PER_LAYER):
        fn = _link(cell.id, getattr(cell.kernels, f"{cell.name}_{entry}"), fn)
    return fn


cell_step = _chain("step")                    # (cell_id, xp, bx, bias, b_hh, hW, h_prev, c_prev, h_next, c_next, gates, hn)
cell_step_backward = _chain("step_backward")  # (cell_id, dh_out, dh, dq, h_prev, h, c_prev, c, gates, hn, dxp, da, db, dbx)

input_apart = _unknown  # 1 if the cell keeps its input and recurrent products apart (Cell.input_apart), 0 if not
for _cell in reversed(PER_LAYER):
    input_apart = _flag_link(_cell.id, int(_cell.input_apart), input_apart)


@njit
def known_input_apart(cell_id):
    """``input_apart`` of a cell the compiled chains know; ValueError for any other id (kernels
    compiled before a cell was added: clear the Numba cache)."""
    apart = input_apart(cell_id)
    if apart < 0:
        raise ValueError("a cell id the compiled kernels do not know (clear the Numba cache)")
    return apart
