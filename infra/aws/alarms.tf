# The alarms a blue/green update of the endpoint watches: either one in ALARM rolls the update back.
resource "aws_cloudwatch_metric_alarm" "invocation_5xx" {
  alarm_name          = "${var.name}-${var.endpoint_name}-5xx"
  alarm_description   = "Invocation 5XX errors on ${var.endpoint_name}: rolls back a deployment in progress"
  namespace           = "AWS/SageMaker"
  metric_name         = "Invocation5XXErrors"
  dimensions          = { EndpointName = var.endpoint_name, VariantName = "stable" }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  threshold           = var.alarm_5xx_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
}

resource "aws_cloudwatch_metric_alarm" "model_latency" {
  alarm_name          = "${var.name}-${var.endpoint_name}-latency-p99"
  alarm_description   = "p99 model latency on ${var.endpoint_name}: rolls back a deployment in progress"
  namespace           = "AWS/SageMaker"
  metric_name         = "ModelLatency"
  dimensions          = { EndpointName = var.endpoint_name, VariantName = "stable" }
  extended_statistic  = "p99"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  # ModelLatency is in microseconds.
  threshold           = var.alarm_latency_p99_ms * 1000
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
}
