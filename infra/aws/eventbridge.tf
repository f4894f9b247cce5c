# New data under the data prefix starts a retraining run (the retrain state machine), as hybridml.aws.eventbridge.
resource "aws_cloudwatch_event_rule" "retrain" {
  name        = "${var.name}-retrain-on-new-data"
  description = "New object under s3://${var.bucket_name}/${var.data_prefix} starts a hybridml retraining run"
  event_pattern = jsonencode({
    source        = ["aws.s3"]
    "detail-type" = ["Object Created"]
    detail = {
      bucket = { name = [aws_s3_bucket.artifacts.id] }
      object = { key = [{ prefix = var.data_prefix }] }
    }
  })
}

resource "aws_cloudwatch_event_target" "retrain" {
  rule      = aws_cloudwatch_event_rule.retrain.name
  target_id = "retrain"
  arn       = aws_sfn_state_machine.retrain.arn
  role_arn  = aws_iam_role.events.arn

  input_transformer {
    input_paths = {
      bucket = "$.detail.bucket.name"
      key    = "$.detail.object.key"
    }
    # The retrain state machine's input: the new object plus the run's constants (RETRAIN_INPUT).
    input_template = <<-JSON
      {"bucket": <bucket>, "key": <key>, "image_uri": "${local.image_uri}", "role_arn": "${aws_iam_role.sagemaker_execution.arn}", "instance_type": "${var.training_instance_type}", "model_name": "${var.endpoint_name}", "target": "${var.target_column}", "tracking_uri": "${var.tracking_uri}", "output_path": "s3://${aws_s3_bucket.artifacts.id}/training-output/"}
    JSON
  }
}
