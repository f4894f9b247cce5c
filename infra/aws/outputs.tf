output "bucket" {
  description = "Data and model artifact bucket."
  value       = aws_s3_bucket.artifacts.id
}

output "ecr_repository_url" {
  description = "Where to push the project's image (serving/Dockerfile)."
  value       = aws_ecr_repository.predictor.repository_url
}

output "sagemaker_execution_role_arn" {
  description = "Execution role for CreateModel (hybridml deploy --target sagemaker --role-arn)."
  value       = aws_iam_role.sagemaker_execution.arn
}

output "model_package_group" {
  description = "Model package group the registry approvals are mirrored to."
  value       = aws_sagemaker_model_package_group.models.model_package_group_name
}

output "deploy_state_machine_arn" {
  description = "The deploy flow (CreateModel ... InService)."
  value       = aws_sfn_state_machine.deploy.arn
}

output "retrain_state_machine_arn" {
  description = "The retraining run the EventBridge rule starts."
  value       = aws_sfn_state_machine.retrain.arn
}

output "rollback_alarm_names" {
  description = "CloudWatch alarms for the blue/green update's AutoRollbackConfiguration."
  value       = [aws_cloudwatch_metric_alarm.invocation_5xx.alarm_name, aws_cloudwatch_metric_alarm.model_latency.alarm_name]
}
