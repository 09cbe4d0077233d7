"""``python -m chatlog.projections._rebuild_child``: the reading half of a rebuild.

A module of its own (not imported by the package), so running it as
``__main__`` never finds itself already imported.
"""

from chatlog.projections._reader import child_main

if __name__ == "__main__":
    child_main()
