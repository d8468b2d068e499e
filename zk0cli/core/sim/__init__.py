"""zk0's MuJoCo SO-101 simulator: scripted demonstrations as LeRobotDatasets, and evaluation.

Public API:

- :data:`SIM_TASKS`, :data:`TASK_INSTRUCTIONS`
- :func:`generate_dataset`: write one LeRobotDataset v3.0 of expert episodes
- :func:`ensure_sim_dataset`: the same, cached under the user cache directory
- :func:`evaluate_policy`: closed-loop success rate of any policy function
- :class:`LeRobotPolicyFn`: a LeRobot policy (``select_action`` + processors) as a policy
  function; :class:`ScriptedExpert` and :class:`RandomPolicy` as references
- :func:`contact_sheet`: a PNG of frames from both cameras

Importing this package is cheap: mujoco and LeRobot are imported when first used.
"""

from zk0cli.core.sim.cache import GENERATOR_VERSION, ensure_sim_dataset, sim_repo_id
from zk0cli.core.sim.evaluate import LeRobotPolicyFn, RandomPolicy, evaluate_policy
from zk0cli.core.sim.expert import ScriptedExpert
from zk0cli.core.sim.preview import contact_sheet
from zk0cli.core.sim.recorder import generate_dataset
from zk0cli.core.sim.tasks import SIM_TASKS, TASK_INSTRUCTIONS

__all__ = [
    "GENERATOR_VERSION",
    "SIM_TASKS",
    "TASK_INSTRUCTIONS",
    "LeRobotPolicyFn",
    "RandomPolicy",
    "ScriptedExpert",
    "contact_sheet",
    "ensure_sim_dataset",
    "evaluate_policy",
    "generate_dataset",
    "sim_repo_id",
]
