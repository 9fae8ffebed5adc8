"""bench: a benchmark harness for disentangled and diffusion-based representation learning."""

import importlib

__version__ = "0.1.0"


def evaluate(model, dataset="dsprites-procedural-32", metrics=None, *, seed=0, name=None):
    """Score any object with ``encode(images) -> codes`` on a dataset with the grid's metrics (rows as a DataFrame).

    See :func:`bench.python_api.evaluate`.
    """
    # by name, at call time: `import bench` (every `from bench import ...`) must not pull in torch or pandas
    api = importlib.import_module("bench.python_api")
    return api.evaluate(model, dataset, metrics, seed=seed, name=name)
