"""The argument types of a kernel's call, written as short codes by parameter name: what a helper
process compiles a kernel for ahead of the call (compile_aside.py), declared beside each kernel."""
from __future__ import annotations


def signature(fn, types_by_name: dict, dtype):
    """The argument types of a call of ``fn`` (a compiled function or its Python function), from
    its parameter names: ``types_by_name[name]`` is "f<n>" an n-d C array of ``dtype``, "i<n>" /
    "d<n>" of int64 / float64 (n = 0: a scalar), "b" a bool. KeyError for a parameter not named."""
    from numba import types
    from numba.np.numpy_support import from_dtype

    code = getattr(fn, "py_func", fn).__code__
    scalar = {"f": from_dtype(dtype), "i": types.int64, "d": types.float64}
    out = []
    for name in code.co_varnames[:code.co_argcount]:
        kind = types_by_name[name]
        if kind == "b":
            out.append(types.boolean)
        elif kind[1:] == "0":
            out.append(scalar[kind[0]])
        else:
            out.append(types.Array(scalar[kind[0]], int(kind[1:]), "C"))
    return tuple(out)
