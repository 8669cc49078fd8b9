"""Live dashboards built from stock ipywidgets, one module per paradigm.

- :mod:`.run`: :class:`RunDashboard`, a DAG run;
- :mod:`.job`: :class:`JobDashboard`, a task agents' job;
- :mod:`.pubsub`: :class:`PubSubMonitor`, a pub/sub bus.

They share :mod:`._base` (panels, throttled redraw, clock, graph rendering,
escaping). Each one updates from its source's events at most 4 times a second
(however fast events arrive), catches up with the last event within a second
even when no other event comes, ticks its clock while the work runs, always
shows the final state when the work ends, and escapes every piece of text it
shows. :mod:`.big`, :mod:`.inspect`, :mod:`.questions` and :mod:`.exporting`
hold the pieces about one concern each (big runs, one node, questions to a
person, writing a report to a file).

Importing this package loads no widget: the classes are imported from their modules
(or from :mod:`dagger_nb.notebook`).
"""
