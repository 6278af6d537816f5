"""The kernels a process compiles, by module and qualified name, from Numba's compile events: for
the tests that run a fresh process on a given cache and check what it compiled."""
import contextlib


@contextlib.contextmanager
def compiled_names():
    """Within the block, the list it yields receives every compilation's name."""
    from numba.core import event

    names = []

    class Names(event.Listener):   # Numba takes instances of its own Listener class only
        def on_start(self, e):
            fn = e.data["dispatcher"].py_func
            names.append(f"{fn.__module__}.{fn.__qualname__}")

        def on_end(self, e):
            pass

    with event.install_listener("numba:compile", Names()):
        yield names
