"""Graph-to-graph passes and the pass manager. One module per pass; ``manager`` builds the pipelines."""
from .manager import FixedPoint, Pass, PassContext, PassManager, PassResult, pass_names, pipeline_for, run_passes

__all__ = ["FixedPoint", "Pass", "PassContext", "PassManager", "PassResult", "pass_names", "pipeline_for",
           "run_passes"]
