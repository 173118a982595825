"""intentflow: outcome definitions to a trained, evaluated, versioned intent classifier.

The core package never imports Prefect; orchestration lives in ``tasks/`` and ``flows/``.
"""

from intentflow.errors import IntentflowError

__version__ = "0.1.0"

__all__ = ["IntentflowError", "__version__"]
