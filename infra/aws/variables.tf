variable "region" {
  description = "AWS region of every resource."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every resource name (lower-case letters, digits and '-')."
  type        = string
  default     = "hybridml"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lower-case letters, digits or '-', starting with a letter."
  }
}

variable "bucket_name" {
  description = "S3 bucket for training data and model artifacts (globally unique)."
  type        = string
}

variable "model_prefix" {
  description = "Key prefix of model.tar.gz artifacts: the only part of the bucket SageMaker may read."
  type        = string
  default     = "models/"
}

variable "data_prefix" {
  description = "Key prefix of new training data: an object created under it starts a retraining run."
  type        = string
  default     = "data/incoming/"

  validation {
    condition     = length(var.data_prefix) > 0
    error_message = "data_prefix must not be empty: every object in the bucket would start a retraining run."
  }
}

variable "model_package_group" {
  description = "SageMaker model package group the registry's approvals are mirrored to."
  type        = string
  default     = "hybridml-model"
}

variable "endpoint_name" {
  description = "SageMaker endpoint the deploy flow serves and the rollback alarms watch."
  type        = string
  default     = "hybridml-model"
}

variable "training_instance_type" {
  description = "Instance type of the retraining run (a SageMaker training job running hybridml run)."
  type        = string
  default     = "ml.m5.large"
}

variable "target_column" {
  description = "Label column of the training data, passed to hybridml run --target."
  type        = string
  default     = "target"
}

variable "tracking_uri" {
  description = "MLflow tracking + registry URI the retraining run registers to (reachable from SageMaker)."
  type        = string
}

variable "image_tag" {
  description = "Tag of the project's image in the ECR repository (immutable tags: one tag, one image)."
  type        = string
  default     = "0.1.0"
}

variable "alarm_5xx_threshold" {
  description = "Invocation 5XX errors per minute on a variant that trip the rollback alarm."
  type        = number
  default     = 5
}

variable "alarm_latency_p99_ms" {
  description = "p99 model latency (milliseconds) that trips the rollback alarm."
  type        = number
  default     = 500
}

variable "log_retention_days" {
  description = "Retention of the state machines' execution logs."
  type        = number
  default     = 365
}
