"""Labs: the cell format (``cells``), generated notebooks and labs (``build``), the metadata lint (``lint``) and
the autograder behind ``dlcourse grade`` and ``dlcourse check`` (``autograde``)."""
