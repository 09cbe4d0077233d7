"""Where agent code keeps state, on chatlog's log.

- :mod:`chatlog.integrations.langgraph`: ``ChatlogSaver``, a LangGraph checkpoint saver
  (``pip install chatlog[langgraph]``).
- :mod:`chatlog.integrations.eventsourcing`: a persistence module for the
  ``eventsourcing`` library (``PERSISTENCE_MODULE=chatlog.integrations.eventsourcing``).

Their records are ordinary events of the log (aggregate types ``langgraph`` and
``eventsourcing``): replayed, archived and migrated with the rest.
"""
