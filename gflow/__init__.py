"""gflow: gradient flow and discrete training dynamics of neural networks, in JAX.

Gradient flow is integrated as an ODE with diffrax; GD, SGD and optax optimizers run
on the same time axis (t = step x lr), so continuous and discrete dynamics can be
compared point by point.
"""

from importlib.metadata import PackageNotFoundError, version

from . import curvature as curvature
from . import data as data
from . import distributions as distributions
from . import init as init
from . import losses as losses
from . import lowrank as lowrank
from . import ntk as ntk
from . import observe as observe
from . import online as online
from . import population as population
from . import rotation as rotation
from . import stats as stats
from . import trajectory as trajectory
from .data import Dataset as Dataset
from .discrete import GD as GD
from .discrete import SGD as SGD
from .discrete import Optax as Optax
from .ensemble import Run as Run
from .ensemble import Sweep as Sweep
from .ensemble import simulate_ensemble as simulate_ensemble
from .ensemble import sweep as sweep
from .flow import GradientFlow as GradientFlow
from .lowrank import LowRankTwoLayer as LowRankTwoLayer
from .nets import ACTIVATIONS as ACTIVATIONS
from .nets import MLP as MLP
from .nets import TwoLayer as TwoLayer
from .nets import TwoLayerParams as TwoLayerParams
from .nets import multiplicity as multiplicity
from .objective import Objective as Objective
from .simulate import SimulationError as SimulationError
from .simulate import simulate as simulate
from .times import LinTimes as LinTimes
from .times import LogTimes as LogTimes
from .trajectory import Trajectory as Trajectory

try:
    __version__ = version("gflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
