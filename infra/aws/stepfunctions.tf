# The state machines, from the definitions `hybridml export step-functions` writes (definitions/*.asl.json).
resource "aws_cloudwatch_log_group" "states" {
  name              = "/aws/vendedlogs/states/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.hybridml.arn
}

resource "aws_sfn_state_machine" "deploy" {
  name       = "${var.name}-deploy"
  role_arn   = aws_iam_role.states.arn
  definition = file("${path.module}/definitions/deploy.asl.json")

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.states.arn}:*"
    include_execution_data = true
    level                  = "ERROR"
  }

  tracing_configuration {
    enabled = true
  }
}

resource "aws_sfn_state_machine" "retrain" {
  name       = "${var.name}-retrain"
  role_arn   = aws_iam_role.states.arn
  definition = file("${path.module}/definitions/retrain.asl.json")

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.states.arn}:*"
    include_execution_data = true
    level                  = "ERROR"
  }

  tracing_configuration {
    enabled = true
  }
}
