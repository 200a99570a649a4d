"""Status codes shared by every dynamics (an int inside jit, a string on the host)."""

COMPLETED, STOP_LOSS, STOP_GRAD, DIVERGED, MAX_STEPS, SOLVER_FAILED = range(6)

NAMES = ("completed", "stop_loss", "stop_grad", "diverged", "max_steps", "solver_failed")
