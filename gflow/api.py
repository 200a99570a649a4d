"""The public API of gflow, imported on first use of any name in ``gflow``.

``gflow/__init__.py`` loads this module lazily (PEP 562), so that ``import gflow.cli``
and ``gflow --help`` do not pay for importing jax; everything here is re-exported as
``gflow.<name>``.
"""

from . import condense as condense
from . import curvature as curvature
from . import data as data
from . import distributions as distributions
from . import dynamics as dynamics
from . import expected as expected
from . import init as init
from . import kernels as kernels
from . import losses as losses
from . import lowrank as lowrank
from . import mlp_kernels as mlp_kernels
from . import ntk as ntk
from . import observe as observe
from . import online as online
from . import population as population
from . import rotation as rotation
from . import stats as stats
from . import tangent as tangent
from . import trajectory as trajectory
from .adam_flow import AdamFlow as AdamFlow
from .central_flow import CentralFlow as CentralFlow
from .data import Dataset as Dataset
from .discrete import GD as GD
from .discrete import SGD as SGD
from .discrete import Optax as Optax
from .ensemble import Run as Run
from .ensemble import Sweep as Sweep
from .ensemble import simulate_ensemble as simulate_ensemble
from .ensemble import sweep as sweep
from .flow import GradientFlow as GradientFlow
from .linearized import Linearized as Linearized
from .lowrank import LowRankTwoLayer as LowRankTwoLayer
from .modified import ModifiedFlow as ModifiedFlow
from .momentum import Momentum as Momentum
from .nets import ACTIVATIONS as ACTIVATIONS
from .nets import MLP as MLP
from .nets import AbstractNet as AbstractNet
from .nets import TwoLayer as TwoLayer
from .nets import TwoLayerParams as TwoLayerParams
from .nets import multiplicity as multiplicity
from .objective import AbstractObjective as AbstractObjective
from .objective import Objective as Objective
from .online import OnlineSGD as OnlineSGD
from .sharding import shard_neurons as shard_neurons
from .simulate import SimulationError as SimulationError
from .simulate import simulate as simulate
from .sme import SME as SME
from .times import LinTimes as LinTimes
from .times import LogTimes as LogTimes
from .trajectory import Trajectory as Trajectory

# the research modules' observables, registered explicitly: every name works after `import gflow`
for _table in (ntk.OBSERVABLES, population.OBSERVABLES, rotation.OBSERVABLES,
               condense.OBSERVABLES, curvature.OBSERVABLES, expected.OBSERVABLES):
    observe.register_table(_table)
del _table
