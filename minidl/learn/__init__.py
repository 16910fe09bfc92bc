"""Training: the Learner, its callbacks, metrics and the learning-rate finder."""
from .callback import (Callback, CancelBackwardException, CancelBatchException, CancelEpochException,  # noqa: F401
                       CancelFitException, CancelStepException, CancelTrainException, CancelValidateException,
                       EarlyStoppingCallback, GradientClip, NonFiniteLossError, ParamScheduler, SaveModelCallback,
                       TerminateOnNaN, TrackerCallback, TrainEvalCallback)
from .learner import Learner, trainable_params  # noqa: F401
from .lr_find import LRFinder, SuggestedLRs, minimum, steep, suggest, valley  # noqa: F401
from .metrics import (AccumMetric, AvgMetric, DiceMulti, F1Score, JaccardCoeffMulti, Metric,  # noqa: F401
                      PixelAccuracy, accuracy, error_rate, foreground_acc, mae, rmse)
from .recorder import ProgressCallback, Recorder  # noqa: F401
