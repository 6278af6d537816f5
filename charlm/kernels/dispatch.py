"""A per-layer cell's step, by the cell's id: if-chains over the rows of the cell table, built at import.

The layer kernels (layer.py) and the generation loop (generate.py) are written once for every
per-layer cell: they call ``cell_step`` / ``cell_step_backward`` with the cell's id, and the chain
calls ``<name>_step`` / ``<name>_step_backward`` of the row with that id (every cell's file has the
pair, in the interface kernels/cells.py describes). Why chains compiled into their caller and not
functions passed as arguments: a kernel that takes a function argument is compiled per function
object, and Numba cannot find it in its on-disk cache again in a new process (every process would
recompile the layer kernels). The chain is compiled into its caller, which is cached whole.

A chain's source is written out from the table, its argument list spelt out (``STEP_ARGS``,
``BACKWARD_ARGS``), so Numba inlines it into the caller (``inline="always"``, which a chain of
closures passing ``*args`` on cannot take): a row's step then costs one test of the id and one
direct call, as a step function called by name does, not one call per link of the chain.

Numba's cache does not notice a new row: after adding a cell, the cached layer kernels still hold
the old chains. ``input_apart`` returns -1 for an id a compiled chain does not know, and the
kernels refuse it before any work ("clear the Numba cache": the __pycache__ of charlm/kernels).
"""
from numba import njit

from .cells import CELLS

PER_LAYER = sorted((c for c in CELLS.values() if not c.feeds_output), key=lambda c: c.id)

STEP_ARGS = "xp, bx, bias, b_hh, hW, h_prev, c_prev, h_next, c_next, gates, hn"
BACKWARD_ARGS = "dh_out, dh, dq, h_prev, h, c_prev, c, gates, hn, dxp, da, db, dbx"


@njit(cache=True)
def _unknown(cell_id):
    return -1


def _chain(entry: str, args: str):
    """``cell_<entry>(cell_id, <args>)``: an if-chain calling ``<name>_<entry>(<args>)`` of the row
    whose id it is (nothing for an unknown id), compiled to be inlined into its caller."""
    lines = [f"def cell_{entry}(cell_id, {args}):"]
    for i, cell in enumerate(PER_LAYER):
        lines += [f"    {'el' if i else ''}if cell_id == {cell.id}:", f"        {cell.name}_{entry}({args})"]
    namespace = {f"{c.name}_{entry}": getattr(c.kernels, f"{c.name}_{entry}") for c in PER_LAYER}
    exec("\n".join(lines), namespace)  # source from the cell table only (names and ids)
    return njit(inline="always")(namespace[f"cell_{entry}"])


cell_step = _chain("step", STEP_ARGS)
cell_step_backward = _chain("step_backward", BACKWARD_ARGS)


def _flag_link(cell_id, value, rest):
    @njit
    def link(cid):
        return value if cid == cell_id else rest(cid)
    return link


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
