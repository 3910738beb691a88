"""MLflow models-from-code entry: the logged pyfunc is this file plus the artifact folder, no pickle."""
import mlflow

from pipeline.pyfunc import CVAEPyfunc

mlflow.models.set_model(CVAEPyfunc())
