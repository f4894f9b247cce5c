"""Monitoring: drift, online quality, canary analysis, A/B reports, alert rules, dashboards and retraining triggers."""
