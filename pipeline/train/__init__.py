"""Training: the Ray Train (DDP) job. `driver.py` prepares (table, split, encoder), runs the TorchTrainer and
publishes (model artifact, MLflow run, registered version); `worker.py` is the loop each worker runs;
`dp_sgd.py` its differentially private step."""
