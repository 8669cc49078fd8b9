"""Run actions on a Dask cluster while orchestration stays in the notebook.

>>> from distributed import Client                          # doctest: +SKIP
>>> client = Client()                                       # doctest: +SKIP
>>> executor = DagExecutor(registry, backend=DaskBackend(client))  # doctest: +SKIP

Each attempt of a node becomes one Dask task whose key is
``f"{action}-{uuid}"``: one Dask key prefix per action, as Dask expects. The
nodes the executor sends ahead together (a fan-out's children) reach the
scheduler as one graph, one update instead of one per ``client.submit``. The
rules, in short (docs/dask.md has the long form):

* async actions run on the worker's event loop, sync ones in its thread pool;
  ``inline=True`` actions are glue and stay on the notebook's loop;
* ``ctx`` arrives on the worker as a copy: ``ctx.executor`` is ``None``,
  ``ctx.cache`` holds only the node's own referenced inputs, and whatever the
  action writes to it (``ctx.output``, ``insert_value``) is written to the run's
  cache when the attempt returns;
* Dask futures in the inputs are resolved on the worker, and Dask collections
  are computed on the cluster first (``client.compute``), so large data moves
  between workers, never through the notebook;
* cancelling the await (node timeout, run cancel, stop policy) cancels the
  future; an async action is cancelled on the worker too, a sync one runs to
  its end in its thread (Python cannot kill threads) and its result is dropped;
* a small result (pickled, at most ``PUSH_LIMIT`` bytes) comes back to the
  notebook through the scheduler as the task finishes, on the streams Dask
  already keeps open; a bigger one stays on its worker, the cache holding a
  :class:`ClusterValue` that fetches it when read, and a node on the cluster
  taking it from there (unless the notebook needs it at once: ``ctx``,
  incremental runs, a run store, hooks);
* ``await backend.aclose()`` (or ``close()``) stops bringing results back: the
  task doing it is cancelled and awaited;
* a worker that dies mid-action makes the attempt fail (``KilledWorker``) once
  the scheduler gives up on the task: set ``distributed.scheduler.allowed-failures``
  to 0 so that happens at the first death and ``try_count`` alone decides.

Workers need ``dagger-nb`` installed: the small wrappers in ``worker.py`` are pickled by
reference; the action functions themselves travel by value (cloudpickle), so
functions defined in a notebook cell work.
"""

from dagger_nb.backends.dask.backend import PLUGIN_NAME, DaskBackend
from dagger_nb.backends.dask.batching import Pick, SendBatch, Sent
from dagger_nb.backends.dask.remote import ClusterValue
from dagger_nb.backends.dask.worker import PUSH_LIMIT

__all__ = ["PLUGIN_NAME", "PUSH_LIMIT", "ClusterValue", "DaskBackend", "Pick", "SendBatch", "Sent"]
