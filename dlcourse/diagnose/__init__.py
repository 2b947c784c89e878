"""Training diagnostics: tools that tell you why training goes wrong, or which setting to try first.

Notebook 04 introduces the learning-rate range test, :func:`lr_range_test`. Notebook 13 (debugging) adds the
training doctor, :func:`doctor`, which runs a dozen checks on a training set-up and returns a :class:`Report` of
:class:`Finding` s. Import both from here (``from dlcourse.diagnose import doctor, lr_range_test``). Every tool
leaves the model and optimizer as it found them; results give matplotlib Figures.

One concept per module, and imports flow one way (``report``, ``context`` <- the checks <- ``runner``):

- ``report``: :class:`Finding`, :class:`Report`, the severities and the names of the checks (:data:`CHECKS`);
- ``context``: what the checks share (the model's pristine copy, the scanned data, training and scoring helpers,
  :data:`~dlcourse.diagnose.context.STEP_EXAMPLES` and :data:`~dlcourse.diagnose.context.SCAN_EXAMPLES`);
- ``lr_range``: the LR range test;
- the checks, one module per family, each with its thresholds as documented constants: ``data`` (labels, inputs,
  leakage, shuffling), ``loss`` (initial_loss), ``learning`` (overfit_batch, learnability), ``gradients``
  (gradient_flow, activations), ``numerics`` (non_finite), ``learning_rate`` (lr_range), ``eval_mode``;
- ``runner``: :func:`doctor` and the registry that maps each check's name to its function.
"""

from .context import standard_train_step
from .lr_range import LRRangeResult, lr_range_test
from .report import CHECKS, SEVERITIES, Finding, Report
from .runner import doctor

__all__ = ["LRRangeResult", "lr_range_test", "CHECKS", "SEVERITIES", "Finding", "Report", "doctor",
           "standard_train_step"]
