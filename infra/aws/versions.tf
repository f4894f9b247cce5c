# Pinned tool and provider versions of the hybridml AWS module (Terraform or OpenTofu).
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "= 5.82.2"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      project    = "hybridml"
      managed-by = "terraform"
    }
  }
}
