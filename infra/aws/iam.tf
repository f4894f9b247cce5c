# Least-privilege roles: SageMaker (serve and retrain), Step Functions (drive SageMaker), EventBridge (start runs).

data "aws_iam_policy_document" "sagemaker_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "sagemaker_execution" {
  name               = "${var.name}-sagemaker-execution"
  assume_role_policy = data.aws_iam_policy_document.sagemaker_assume.json
}

data "aws_iam_policy_document" "sagemaker_execution" {
  statement {
    sid       = "ReadModelArtifacts"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.artifacts.arn}/${var.model_prefix}*"]
  }
  statement {
    sid       = "ReadNewData"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.artifacts.arn}/${var.data_prefix}*"]
  }
  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.model_prefix}*", "${var.data_prefix}*"]
    }
  }
  statement {
    sid       = "WriteTrainingOutput"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.artifacts.arn}/training-output/*"]
  }
  statement {
    sid       = "DecryptArtifacts"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.hybridml.arn]
  }
  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [aws_ecr_repository.predictor.arn]
  }
  statement {
    # GetAuthorizationToken has no resource-level permissions: AWS only accepts "*" here.
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["arn:${local.partition}:logs:${var.region}:${local.account}:log-group:/aws/sagemaker/*"]
  }
  statement {
    # PutMetricData has no resource-level permissions; the namespace condition keeps it to SageMaker's own.
    sid       = "PutMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringLike"
      variable = "cloudwatch:namespace"
      values   = ["aws/sagemaker/*", "/aws/sagemaker/*"]
    }
  }
}

resource "aws_iam_role_policy" "sagemaker_execution" {
  name   = "least-privilege"
  role   = aws_iam_role.sagemaker_execution.id
  policy = data.aws_iam_policy_document.sagemaker_execution.json
}

data "aws_iam_policy_document" "states_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "states" {
  name               = "${var.name}-step-functions"
  assume_role_policy = data.aws_iam_policy_document.states_assume.json
}

locals {
  sagemaker_arn = "arn:${local.partition}:sagemaker:${var.region}:${local.account}"
}

data "aws_iam_policy_document" "states" {
  statement {
    sid = "DeployFlow"
    actions = [
      "sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
      "sagemaker:DescribeEndpoint", "sagemaker:AddTags",
    ]
    resources = [
      "${local.sagemaker_arn}:model/${var.endpoint_name}-*",
      "${local.sagemaker_arn}:endpoint-config/${var.endpoint_name}-*",
      "${local.sagemaker_arn}:endpoint/${var.endpoint_name}",
    ]
  }
  statement {
    sid       = "RetrainRun"
    actions   = ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob", "sagemaker:AddTags"]
    resources = ["${local.sagemaker_arn}:training-job/hybridml-retrain-*"]
  }
  statement {
    # The .sync integration waits for the training job through a managed EventBridge rule of Step Functions.
    sid       = "SyncTrainingJob"
    actions   = ["events:PutTargets", "events:PutRule", "events:DescribeRule"]
    resources = ["arn:${local.partition}:events:${var.region}:${local.account}:rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule"]
  }
  statement {
    sid       = "PassExecutionRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.sagemaker_execution.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["sagemaker.amazonaws.com"]
    }
  }
  statement {
    # Log delivery and X-Ray APIs have no resource-level permissions.
    sid = "ExecutionLogsAndTraces"
    actions = [
      "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
      "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "states" {
  name   = "drive-sagemaker"
  role   = aws_iam_role.states.id
  policy = data.aws_iam_policy_document.states.json
}

data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "events" {
  name               = "${var.name}-events-start-retrain"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
}

data "aws_iam_policy_document" "events" {
  statement {
    sid       = "StartRetrainRun"
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.retrain.arn]
  }
}

resource "aws_iam_role_policy" "events" {
  name   = "start-retrain"
  role   = aws_iam_role.events.id
  policy = data.aws_iam_policy_document.events.json
}
