"""The former name of runtime/plan_net.py, kept so that `from netspec.runtime.executor import
PlanNet` still works."""
from .plan_net import PlanNet

__all__ = ["PlanNet"]
