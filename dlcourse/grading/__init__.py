"""Labs and their grading, one concept per module:

``cells`` (the nbgrader cell format and its transformations), ``build`` (generated notebooks and labs, the drift
check), ``lint`` (lab metadata), ``checks`` (what test cells call), ``kernel`` (a bounded notebook run),
``autograde`` (one notebook: assemble, run, score against the reference), ``submissions`` (finding each student's
notebook), ``batch`` (a whole class in parallel, resumable) and ``feedback`` (per-student HTML).
"""
