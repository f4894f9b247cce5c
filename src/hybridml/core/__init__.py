"""Pure step logic: data, training, evaluation, HPO objective, approval policy.

Nothing under ``hybridml.core`` imports kfp, kserve, mlflow, kubernetes, boto3 or prometheus_client
(tests/unit/test_layers.py checks it), so the same functions serve KFP components, the CLI and the server.
"""
