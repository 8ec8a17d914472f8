"""The doctor's checks, one idea per module. Each is a ``Check``: it overrides the events it needs and reports
through ``Context.report``. ``all_checks()`` builds one of each for a ``Watch``."""

from __future__ import annotations

from ssdaudit.training.doctor.checks.base import Check


def all_checks() -> list[Check]:
    from ssdaudit.training.doctor.checks.amp_clip import ClipBeforeUnscale
    from ssdaudit.training.doctor.checks.cleared_before_step import ClearedBeforeStep
    from ssdaudit.training.doctor.checks.eval_dropout import RandomInEval
    from ssdaudit.training.doctor.checks.eval_mode import EvalModeTraining
    from ssdaudit.training.doctor.checks.frozen_bn import FrozenBatchNormMoves
    from ssdaudit.training.doctor.checks.inputs import UnnormalisedInputs
    from ssdaudit.training.doctor.checks.loading import WeightsNotLoaded
    from ssdaudit.training.doctor.checks.loss_broadcast import LossBroadcast
    from ssdaudit.training.doctor.checks.loss_logits import ProbabilitiesToLogitLoss
    from ssdaudit.training.doctor.checks.lr import LearningRateCollapse
    from ssdaudit.training.doctor.checks.never_cleared import NeverCleared
    from ssdaudit.training.doctor.checks.nonfinite import FirstNonFinite
    from ssdaudit.training.doctor.checks.no_parameter import BackwardReachesNoParameter
    from ssdaudit.training.doctor.checks.precision import LowPrecisionUpdates
    from ssdaudit.training.doctor.checks.replaced import ParametersReplaced
    from ssdaudit.training.doctor.checks.replicas import ReplicasDiffer
    from ssdaudit.training.doctor.checks.targets import DegenerateTargets
    from ssdaudit.training.doctor.checks.zero_in_window import ZeroGradInWindow

    return [NeverCleared(), ClearedBeforeStep(), ZeroGradInWindow(), LearningRateCollapse(),
            BackwardReachesNoParameter(), EvalModeTraining(), FrozenBatchNormMoves(), RandomInEval(),
            ProbabilitiesToLogitLoss(), LossBroadcast(), DegenerateTargets(), UnnormalisedInputs(),
            ClipBeforeUnscale(), LowPrecisionUpdates(), ParametersReplaced(), WeightsNotLoaded(), ReplicasDiffer(),
            FirstNonFinite()]


__all__ = ["Check", "all_checks"]
